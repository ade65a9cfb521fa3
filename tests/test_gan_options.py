"""The generic adversarial step: losses, penalties, DiffAugment, EMA, D steps;
SNGAN and conditional DCGAN through the loop, sampling per class."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax import sample
from medjax import train
from medjax.trainers import gan
from tests.conftest import REPO, tiny_config

_SNGAN = {'model.name': 'sngan', 'model.sngan.g_features': (16, 8, 8),
          'model.sngan.bottom_width': 4, 'model.sngan.d_features': (8, 16),
          'model.sngan.d_kernels': (3, 4), 'model.sngan.d_strides': (1, 2),
          'model.sngan.d_paddings': (1, 1)}
_CDCGAN = {'model.name': 'cdcgan', 'model.num_classes': 4,
           'model.embed_dim': 4}


def _batch(seed=1):
  return {'image': jax.random.randint(jax.random.key(seed), (8, 16, 16, 1), 0,
                                      256).astype(jnp.uint8),
          'label': jnp.arange(8, dtype=jnp.int32) % 4}


def _changed(a, b):
  return any(not np.array_equal(x, y)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('options', [
    {'gan.loss': 'hinge', 'gan.diffaugment': 'color,translation,cutout'},
    {'gan.loss': 'lsgan', 'gan.r1_gamma': 1.0},
    {'gan.loss': 'wgan', 'gan.gp_weight': 10.0, **_SNGAN},
    {'gan.ema_decay': 0.9, **_CDCGAN},
])
def test_options_train_finite_and_update(tmp_path, options):
  task = gan.GANTask(tiny_config(str(tmp_path), **options))
  state = task.init(jax.random.key(0))
  new, metrics = jax.jit(task.train_step)(state, _batch(), jax.random.key(2))
  values = {k: float(v) for k, v in metrics.compute().items()}
  assert all(np.isfinite(v) for v in values.values()), values
  for name in ('g_params', 'd_params', 'd_stats'):
    assert _changed(getattr(state, name), getattr(new, name)), name
  if options.get('gan.ema_decay'):
    want = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, state.g_ema,
                        new.g_params)
    for x, y in zip(jax.tree.leaves(new.g_ema), jax.tree.leaves(want)):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_penalties_change_the_d_loss(tmp_path):
  losses = {}
  for key, value in [('gan.r1_gamma', 0.0), ('gan.r1_gamma', 10.0)]:
    task = gan.GANTask(tiny_config(str(tmp_path), **{key: value}))
    state = task.init(jax.random.key(0))
    _, m = jax.jit(task.train_step)(state, _batch(), jax.random.key(2))
    losses[value] = float(m.compute()['d_loss'])
  assert losses[10.0] > losses[0.0]


def test_d_steps_updates_g_every_kth_call(tmp_path):
  task = gan.GANTask(tiny_config(str(tmp_path), **{'gan.d_steps': 2}))
  step = jax.jit(task.train_step)
  s0 = task.init(jax.random.key(0))
  s1, m1 = step(s0, _batch(1), jax.random.key(1))
  s2, m2 = step(s1, _batch(2), jax.random.key(2))
  assert not _changed(s0.g_params, s1.g_params)
  assert not _changed(s0.g_opt, s1.g_opt)
  assert _changed(s0.d_params, s1.d_params)
  assert _changed(s1.g_params, s2.g_params)
  assert np.isnan(float(m1.compute()['g_loss']))  # no G update in the window
  assert np.isfinite(float(m1.merge(m2).compute()['g_loss']))


def test_bad_options_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match='unknown adversarial loss'):
    gan.GANTask(tiny_config(str(tmp_path), **{'gan.loss': 'hing'}))
  with pytest.raises(ValueError, match='DiffAugment'):
    gan.GANTask(tiny_config(str(tmp_path), **{'gan.diffaugment': 'colour'}))
  with pytest.raises(ValueError, match='SNGAN generator'):
    gan.GANTask(tiny_config(str(tmp_path), **{
        **_SNGAN, 'model.sngan.bottom_width': 2}))
  with pytest.raises(ValueError, match='num_classes'):
    gan.GANTask(tiny_config(str(tmp_path), **{'model.name': 'cdcgan'}))


def test_sngan_spectral_state_survives_the_checkpoint(data_dir, tmp_path):
  wd = str(tmp_path / 'sngan')
  state = train.train_and_evaluate(
      tiny_config(data_dir, num_train_steps=2, **_SNGAN), wd)
  _, _, restored, step = train.restore_run(wd)
  assert step == 2
  u = [x for p, x in jax.tree_util.tree_leaves_with_path(restored.d_stats)
       if 'u' in jax.tree_util.keystr(p)]
  assert u, 'no power-iteration vectors in d_stats'
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(x, y)


def test_conditional_run_samples_per_class_and_exports_tfds(data_dir,
                                                            tmp_path):
  wd = str(tmp_path / 'cdcgan')
  train.train_and_evaluate(tiny_config(
      data_dir, num_train_steps=2, **{**_CDCGAN, 'gan.ema_decay': 0.5}), wd)
  images, manifest = sample.generate(wd, num=0, per_class=3,
                                     classes=['glioma', '3'])
  assert images.shape == (6, 16, 16, 1)
  assert manifest['labels'] == [0, 0, 0, 3, 3, 3]
  assert manifest['label_names'][:2] == ['glioma', 'meningioma']
  assert manifest['ema'] is True
  again, _ = sample.generate(wd, num=0, per_class=3, classes=['glioma', '3'],
                             batch_size=4)
  np.testing.assert_array_equal(images, again)
  balanced, m = sample.generate(wd, num=8)
  assert m['labels'] == [0, 1, 2, 3, 0, 1, 2, 3] and len(balanced) == 8
  with pytest.raises(ValueError, match='unknown class'):
    sample.generate(wd, num=0, per_class=1, classes=['astrocytoma'])
  builder = sample.write_tfds(images, manifest, 'cdcgan_synthetic_test',
                              data_dir)
  assert 'SYNTHETIC' in builder.info.description
  reread = tfds.builder('cdcgan_synthetic_test', data_dir=data_dir)
  records = reread.as_data_source('train')
  assert sorted(int(r['label']) for r in records) == [0, 0, 0, 3, 3, 3]


@pytest.mark.parametrize('name,flags', [
    ('sngan_ct', ['--config.model.sngan.g_features=(16,8,8)',
                  '--config.model.sngan.d_features=(8,16)',
                  '--config.model.sngan.d_kernels=(3,4)',
                  '--config.model.sngan.d_strides=(1,2)',
                  '--config.model.sngan.d_paddings=(1,1)',
                  '--config.dataset.image_size=16']),
    ('sngan_isic', ['--config.model.sngan.g_features=(16,8,8)',
                    '--config.model.sngan.d_features=(8,16)',
                    '--config.model.sngan.d_kernels=(3,4)',
                    '--config.model.sngan.d_strides=(1,2)',
                    '--config.model.sngan.d_paddings=(1,1)',
                    '--config.dataset.image_size=16']),
    ('cdcgan_brain', ['--config.model.g_features=(16,8)',
                      '--config.model.g_kernels=(4,4,4)',
                      '--config.model.g_strides=(1,2,2)',
                      '--config.model.g_paddings=(0,1,1)',
                      '--config.model.d_features=(8,16)',
                      '--config.model.d_kernels=(4,4,4)',
                      '--config.model.d_strides=(2,2,1)',
                      '--config.model.d_paddings=(1,1,0)',
                      '--config.dataset.image_size=16']),
])
def test_config_runs_two_steps_through_main(data_dir, tmp_path, name, flags):
  common = ['--config.num_train_steps=2', '--config.batch_size=4',
            f'--config.dataset.data_dir={data_dir}',
            '--config.dataset.phantom.image_size=32',
            '--config.dataset.phantom.num_train=24',
            '--config.dataset.phantom.num_test=8',
            '--config.num_sample_images=4', '--config.log_every_steps=1']
  wd = str(tmp_path / name)
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.main',
       f'--config={REPO}/configs/{name}.py', f'--workdir={wd}', *common,
       *flags], cwd=REPO, capture_output=True, text=True, timeout=600,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'step 2/2' in proc.stderr and 'nan' not in proc.stderr.lower()
  assert os.listdir(os.path.join(wd, 'checkpoints')) == ['2']
  assert json.load(open(os.path.join(wd, 'config.json')))['model']['name'] \
      == name.split('_')[0]


def test_periodic_network_free_evaluation(data_dir, tmp_path, caplog):
  caplog.set_level('INFO')
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=2, **{
      'gan.eval_split': 'test', 'eval_every_steps': 2,
      'gan.eval_num_samples': 8}), str(tmp_path / 'run'))
  line = [r.message for r in caplog.records
          if r.message.startswith('Validation at step 2')]
  assert line, caplog.text[-2000:]
  for key in ('swd_x1e3=', 'ms_ssim_diversity=', 'ms_ssim_diversity_real='):
    assert key in line[0]
  assert 'nan' not in line[0]
  assert not os.path.exists(tmp_path / 'run' / train.BEST_FILE)


_STARGAN = {'model.name': 'stargan', 'model.num_classes': 4,
            'stargan.g_conv_dim': 4, 'stargan.g_repeat_num': 1,
            'stargan.d_conv_dim': 4, 'stargan.d_repeat_num': 2,
            'gan.loss': 'wgan', 'gan.gp_weight': 10.0, 'gan.d_steps': 2}


def test_stargan_step(tmp_path):
  from medjax.trainers import stargan  # pylint: disable=g-import-not-at-top
  task = stargan.StarGANTask(tiny_config(str(tmp_path), **_STARGAN))
  step = jax.jit(task.train_step)
  s0 = task.init(jax.random.key(0))
  s1, m1 = step(s0, _batch(1), jax.random.key(1))
  s2, m2 = step(s1, _batch(2), jax.random.key(2))
  assert not _changed(s0.g_params, s1.g_params)
  assert _changed(s0.d_params, s1.d_params)
  assert _changed(s1.g_params, s2.g_params)
  values = m1.merge(m2).compute()
  assert all(np.isfinite(float(values[k])) for k in
             ('d_loss', 'd_cls', 'gp', 'g_loss'))
  panels = task.visuals(s2, _batch()['image'][:2])['domains']
  assert panels.shape == (2 * 5, 16, 16, 1)  # input + 4 domains per row
  np.testing.assert_array_equal(panels[0], _batch()['image'][0])


def test_stargan_config_runs_two_steps_through_main(data_dir, tmp_path):
  flags = [f'--config.{k}={v}' for k, v in {
      'num_train_steps': 2, 'batch_size': 4, 'dataset.data_dir': data_dir,
      'dataset.phantom.image_size': 32, 'dataset.phantom.num_train': 24,
      'dataset.phantom.num_test': 8, 'dataset.image_size': 16,
      'stargan.g_conv_dim': 4, 'stargan.g_repeat_num': 1,
      'stargan.d_conv_dim': 4, 'stargan.d_repeat_num': 2,
      'sample_every_steps': 2, 'log_every_steps': 1}.items()]
  wd = str(tmp_path / 'stargan')
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.main',
       f'--config={REPO}/configs/stargan_brain.py', f'--workdir={wd}',
       *flags], cwd=REPO, capture_output=True, text=True, timeout=600,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.isfile(os.path.join(wd, 'samples',
                                     'domains_step_0000002.png'))
  assert os.listdir(os.path.join(wd, 'checkpoints')) == ['2']
  # The state (empty BatchNorm collections, no EMA) restores.
  _, _, state, step = train.restore_run(wd)
  assert step == 2 and state.g_stats == {} and state.d_stats == {}
  assert state.g_ema is None and int(state.step) == 2


def test_periodic_fid_and_kid_with_inception_weights(data_dir, tmp_path,
                                                     caplog):
  from medjax import weights  # pylint: disable=g-import-not-at-top
  from tests.test_inception import _fake_state_dict  # pylint: disable=g-import-not-at-top
  from tests.torchfiles import save_state_dict  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError,
                     match='pt_inception-2015-12-05-6726825d.pth'):
    gan.GANTask(tiny_config(data_dir, **{
        'gan.eval_inception_weights': str(tmp_path / 'none')}))
  src = str(tmp_path / 'pt_inception_fake.pth')
  save_state_dict(_fake_state_dict(), src)
  weights.convert('inception_fid', src, str(tmp_path / 'inception'))
  caplog.set_level('INFO')
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=1, **{
      'gan.eval_split': 'test', 'eval_every_steps': 1,
      'gan.eval_num_samples': 4,
      'gan.eval_inception_weights': str(tmp_path / 'inception')}),
                           str(tmp_path / 'run'))
  line = [r.message for r in caplog.records
          if r.message.startswith('Validation at step 1')]
  assert line and 'fid=' in line[0] and 'kid=' in line[0], caplog.text[-2000:]
  assert 'nan' not in line[0]


def test_tasks_refuse_datasets_with_more_classes_than_the_model():
  from medjax import trainers  # pylint: disable=g-import-not-at-top
  labels = np.array([0, 3, 1])
  assert trainers.check_num_classes(labels, ('a', 'b'), 4) == 4
  with pytest.raises(ValueError, match='6 classes.*num_classes is 4'):
    trainers.check_num_classes(np.array([0, 5]), (), 4)
