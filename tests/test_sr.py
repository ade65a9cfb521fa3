"""Restoration: SR tasks, training with validation, evaluate and restore."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import config_lib
from medjax import degrade
from medjax import evaluate
from medjax import restore
from medjax import train
from medjax.data import degradations
from medjax.data import pipeline
from medjax.metrics import image as image_metrics
from medjax.trainers import sr as sr_lib
from tests.conftest import REPO, tiny_config

_TINY_SR = {
    'model.sr.num_blocks': 1, 'model.sr.features': 8,
    'model.sr.d_features': 8, 'model.sr.d_pool': 'avg',
    'dataset.image_size': 32, 'sr.hr_crop': 16, 'sr.eval_num_images': 4,
    'sr.eval_batch_size': 4, 'sr.crop_border': 2, 'eval_every_steps': 2,
    'sr.vgg_weights': 'random_vgg', 'sr.vgg_layer': 'conv2_2',
    'optimizer.b1': 0.9, 'optimizer.g_learning_rate': 1e-3,
}


_PIX2PIX = {'model.name': 'pix2pix', 'model.sr.scale': 1,
            'sr.lr_degradation': 'box(3)', 'sr.content_loss': 'l1',
            'sr.content_weight': 100.0, 'sr.adversarial_weight': 1.0,
            'model.pix2pix.num_downs': 4, 'model.pix2pix.ngf': 4,
            'model.pix2pix.ndf': 4, 'model.pix2pix.n_layers': 1}


def sr_config(data_dir, **overrides):
  return tiny_config(data_dir, **{'model.name': 'srresnet', **_TINY_SR,
                                  **overrides})


def _batch(shape=(8, 32, 32, 1), seed=1):
  return {'image': jax.random.randint(jax.random.key(seed), shape, 0,
                                      256).astype(jnp.uint8)}


@pytest.mark.parametrize('overrides', [
    {'model.name': 'srresnet'},
    {'model.name': 'srgan', 'sr.content_loss': 'vgg'},
    _PIX2PIX])
def test_train_step_updates_and_is_finite(tmp_path, overrides):
  name = overrides['model.name']
  task = sr_lib.SRTask(sr_config(str(tmp_path), **overrides))
  state = task.init(jax.random.key(0))
  new, m = jax.jit(task.train_step)(state, _batch(), jax.random.key(2),
                                    task.consts())
  values = m.compute()
  assert all(np.isfinite(float(v)) for v in values.values())
  assert int(new.step) == 1
  fields = ['g_params', 'g_stats']
  if name != 'srresnet':
    assert {'d_loss', 'adversarial_loss', 'content_loss'} <= set(values)
    fields += ['d_params', 'd_stats']
  for field in fields:
    for old, upd in zip(jax.tree.leaves(getattr(state, field)),
                        jax.tree.leaves(getattr(new, field))):
      assert not np.array_equal(old, upd), field


def test_mse_training_lowers_the_loss(tmp_path):
  task = sr_lib.SRTask(sr_config(str(tmp_path)))
  state = task.init(jax.random.key(0))
  step = jax.jit(task.train_step)
  # A smooth image: learnable in a few steps.
  y, x = np.mgrid[:32, :32]
  img = (127 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.uint8)
  batch = {'image': jnp.asarray(np.tile(img[None, ..., None], (8, 1, 1, 1)))}
  losses = []
  for i in range(30):
    state, m = step(state, batch, jax.random.key(i), {})
    losses.append(float(m.compute()['g_loss']))
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_content_losses(tmp_path):
  task = sr_lib.SRTask(sr_config(str(tmp_path), **{'sr.content_loss': 'vgg'}))
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1), minval=-1,
                         maxval=1)
  y = jnp.flip(x, axis=1)
  assert float(task.content_loss(x, x, task.consts())) == 0.0
  assert float(task.content_loss(x, y, task.consts())) > 0.0
  mse = sr_lib.SRTask(sr_config(str(tmp_path)))
  np.testing.assert_allclose(mse.content_loss(x, y, {}),
                             np.mean((np.asarray(x) - np.asarray(y))**2),
                             rtol=1e-6)


def test_random_crops_and_pairs(tmp_path):
  images = jnp.arange(2 * 32 * 32, dtype=jnp.int32).reshape(2, 32, 32, 1)
  crops = sr_lib.random_crops(images, 16, jax.random.key(3))
  assert crops.shape == (2, 16, 16, 1)
  for i in range(2):
    y0, x0 = divmod(int(crops[i, 0, 0, 0]) - i * 1024, 32)
    np.testing.assert_array_equal(crops[i], images[i, y0:y0 + 16,
                                                   x0:x0 + 16])
  task = sr_lib.SRTask(sr_config(str(tmp_path)))
  lr, hr = task.pairs(_batch()['image'], jax.random.key(0))
  assert lr.shape == (8, 4, 4, 1) and hr.shape == (8, 16, 16, 1)
  np.testing.assert_array_equal(
      lr, degradations.get('x4_bicubic')(hr))


def test_bad_settings_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match='needs 16x16'):
    sr_lib.SRTask(sr_config(str(tmp_path), **{'model.sr.scale': 1}))
  with pytest.raises(ValueError, match='divisible'):
    sr_lib.SRTask(sr_config(str(tmp_path), **{'sr.hr_crop': 18}))
  with pytest.raises(FileNotFoundError) as e:
    sr_lib.SRTask(sr_config(str(tmp_path), **{
        'sr.content_loss': 'vgg', 'sr.vgg_weights': str(tmp_path / 'none')}))
  assert 'vgg19-dcbb9e9d.pth' in str(e.value)
  assert 'python -m medjax.weights convert --kind=vgg19' in str(e.value)
  with pytest.raises(ValueError, match='model.sr.scale=1'):
    sr_lib.SRTask(sr_config(str(tmp_path), **{
        **_PIX2PIX, 'model.sr.scale': 4, 'sr.lr_degradation': 'x4_bicubic'}))
  with pytest.raises(ValueError, match='best_metric'):
    config_lib.validate(sr_config(str(tmp_path), **{'sr.best_metric': 'l1'}))


@pytest.mark.parametrize('name', ['srresnet_brain', 'srgan_brain',
                                  'srgan_deblur_brain', 'pix2pix_brain'])
def test_configs_validate_and_name_the_weights(name):
  config = config_lib.load_config_file(
      os.path.join(REPO, 'configs', f'{name}.py'))
  config_lib.validate(config)
  assert config.batch_size * config.num_train_steps >= 50 * 2000
  assert config.model.name in config_lib.SR_MODELS
  if config.sr.content_loss == 'vgg':
    with config.unlocked():
      config.sr.vgg_weights = '/nonexistent/vgg19'
    with pytest.raises(FileNotFoundError, match='vgg19-dcbb9e9d.pth'):
      sr_lib.SRTask(config)
  else:
    sr_lib.SRTask(config)


def test_tiled_restoration_equals_whole_image():
  config = sr_config('', **{'model.sr.num_blocks': 2})
  task = sr_lib.SRTask(config)
  state = task.init(jax.random.key(0))
  fn = jax.jit(lambda x: task.restore(state.g_params, state.g_stats, x))
  images = np.asarray(jax.random.randint(
      jax.random.key(1), (2, 60, 52, 1), 0, 256), np.uint8)
  whole = restore.restore_images(fn, images, 4, tile=1000, margin=0,
                                 batch_size=2)
  assert whole.shape == (2, 240, 208, 1)
  margin = math.ceil(restore.receptive_field_radius(2, 4))
  tiled = restore.restore_images(fn, images, 4, tile=8, margin=margin,
                                 batch_size=2)
  diff = np.abs(tiled.astype(int) - whole.astype(int))
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
  # Too little context shows seams: the margin is what makes it exact.
  seams = restore.restore_images(fn, images, 4, tile=8, margin=2,
                                 batch_size=2)
  assert np.abs(seams.astype(int) - whole.astype(int)).max() > 1


@pytest.fixture(scope='module')
def sr_runs(data_dir, tmp_path_factory):
  """An SRResNet run and an SRGAN run started from it (4 steps each)."""
  root = tmp_path_factory.mktemp('sr_runs')
  a, b = str(root / 'srresnet'), str(root / 'srgan')
  train.train_and_evaluate(sr_config(data_dir), a)
  train.train_and_evaluate(sr_config(data_dir, **{
      'model.name': 'srgan', 'sr.content_loss': 'vgg', 'sr.init_from': a}), b)
  return a, b


def test_training_keeps_the_best_checkpoint_and_panels(sr_runs):
  a, _ = sr_runs
  best = json.load(open(os.path.join(a, train.BEST_FILE)))
  assert best['metric'] == 'psnr' and best['step'] in (2, 4)
  assert set(best['values']) == {'psnr', 'ssim', 'bicubic_psnr',
                                 'bicubic_ssim'}
  config, task, state, step = train.restore_run(a, best=True)
  assert step == best['step']
  images = train.load_images(config, 'test')
  np.testing.assert_allclose(task.evaluate(state, images)['psnr'],
                             best['value'], rtol=1e-5)
  assert sorted(os.listdir(os.path.join(a, 'samples'))) == [
      'lr_bicubic_output_hr_step_0000002.png',
      'lr_bicubic_output_hr_step_0000004.png']


def test_srgan_generator_starts_from_srresnet(sr_runs):
  a, b = sr_runs
  _, task, _, _ = train.restore_run(b)
  _, _, src, _ = train.restore_best_or_latest(a)
  state = task.init(jax.random.key(5))
  started = train._init_generator_from(task, state, a)  # pylint: disable=protected-access
  for x, y in zip(jax.tree.leaves((started.g_params, started.g_stats)),
                  jax.tree.leaves((src.g_params, src.g_stats))):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(jax.tree.leaves(started.d_params),
                  jax.tree.leaves(state.d_params)):
    np.testing.assert_array_equal(x, y)


def test_evaluate_table(sr_runs, tmp_path):
  a, b = sr_runs
  report = evaluate.evaluate_restoration([a, b], checkpoint='latest')
  methods = [r['method'] for r in report['rows']]
  assert methods == ['nearest', 'bilinear', 'bicubic', 'srresnet', 'srgan']
  assert report['card']['num_images'] == 8
  config = train.load_config(a)
  hr = train.load_images(config, 'test')
  lr = degradations.get('x4_bicubic')(jnp.asarray(hr))
  bicubic = degradations.resize(lr, (32, 32), 'bicubic')
  want = np.asarray(image_metrics.psnr(bicubic, hr, crop_border=2))
  row = report['rows'][2]['psnr']
  np.testing.assert_allclose(row['mean'], want.mean(), rtol=1e-5)
  half = row['ci_high'] - row['mean']
  np.testing.assert_allclose(
      half, 2.3646 * want.std(ddof=1) / np.sqrt(8), rtol=1e-3)  # t(0.975, 7)
  for r in report['rows']:
    assert r['ssim']['ci_low'] <= r['ssim']['mean'] <= r['ssim']['ci_high']
  evaluate.write_report(report, str(tmp_path))
  table = open(tmp_path / 'metrics.md').read()
  assert '| bicubic | - |' in table and 'srgan' in table
  assert json.load(open(tmp_path / 'metrics.json'))['card']['crop_border'] == 2

  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.evaluate', f'--workdir={a}',
       f'--out={tmp_path}/cli'], cwd=REPO, capture_output=True, text=True,
      timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '| srresnet | srresnet (best, step' in proc.stdout


def test_evaluate_refuses_incomparable_runs(sr_runs, data_dir, tmp_path):
  a, _ = sr_runs
  other = str(tmp_path / 'x2')
  train.train_and_evaluate(sr_config(data_dir, **{
      'model.sr.scale': 2, 'sr.lr_degradation': 'downscale(2,bicubic)',
      'num_train_steps': 1, 'eval_every_steps': 1}), other)
  with pytest.raises(ValueError, match='differ in'):
    evaluate.evaluate_restoration([a, other])


def test_restore_writes_a_new_dataset(sr_runs, data_dir):
  a, _ = sr_runs
  config = train.load_config(a)
  degrade.degrade_dataset(config.dataset, 'x4_bicubic', 'sr_lr_test',
                          splits=['test'])
  builder = restore.restore_dataset(a, 'sr_lr_test/test',
                                    'sr_restored_test', tile=3,
                                    batch_size=3)
  meta = builder.info.metadata
  assert meta['workdir'] == os.path.abspath(a) and meta['checkpoint'] == 'best'
  assert meta['source'] == 'sr_lr_test'
  ds = config.dataset.copy_and_resolve_references()
  with ds.unlocked():
    ds.name = 'sr_restored_test'
  restored = pipeline.load(ds, 'test', resize=False)
  with ds.unlocked():
    ds.name = 'sr_lr_test'
  lr = pipeline.load(ds, 'test', resize=False)
  assert restored.images.shape == (8, 32, 32, 1)
  np.testing.assert_array_equal(restored.labels, lr.labels)
  _, task, state, _ = train.restore_best_or_latest(a)
  direct = np.asarray(task.restore(state.g_params, state.g_stats,
                                   lr.images))
  diff = np.abs(direct.astype(int) - restored.images.astype(int))
  assert diff.max() <= 1
  with pytest.raises(FileExistsError):
    restore.restore_dataset(a, 'sr_lr_test/test', 'sr_restored_test')


@pytest.mark.parametrize('name', ['srresnet_brain', 'srgan_deblur_brain',
                                  'pix2pix_brain'])
def test_config_runs_two_steps_through_main(data_dir, tmp_path, name):
  flags = [f'--config.{k}={v}' for k, v in {
      'num_train_steps': 2, 'batch_size': 4, 'eval_every_steps': 2,
      'dataset.data_dir': data_dir, 'dataset.phantom.image_size': 32,
      'dataset.phantom.num_train': 24, 'dataset.phantom.num_test': 8,
      'model.sr.num_blocks': 1, 'model.sr.features': 8,
      'model.sr.d_features': 8, 'sr.eval_num_images': 4,
      'sr.vgg_weights': 'random_vgg', 'sr.vgg_layer': 'conv1_2'}.items()]
  if name == 'srresnet_brain':
    flags += ['--config.dataset.image_size=32', '--config.sr.hr_crop=16']
  elif name == 'pix2pix_brain':
    flags += ['--config.dataset.image_size=32',
              '--config.model.pix2pix.num_downs=5',
              '--config.model.pix2pix.ngf=4', '--config.model.pix2pix.ndf=4']
  else:
    flags += ['--config.dataset.image_size=24',
              '--config.dataset.degradation=resize(24,24,area)']
  wd = str(tmp_path / name)
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.main',
       f'--config={REPO}/configs/{name}.py', f'--workdir={wd}', *flags],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Validation at step 2' in proc.stderr
  assert os.path.isfile(os.path.join(wd, train.BEST_FILE))
  assert os.listdir(os.path.join(wd, 'checkpoints')) == ['2']

