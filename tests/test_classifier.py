"""The classifier: model, AUC, learning, training through main, its features
as a Frechet-distance extractor, and `medjax.evaluate` on classifier runs."""

import ast
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import config_lib
from medjax import train
from medjax.metrics import card as card_lib
from medjax.metrics import classification
from medjax.metrics import features
from medjax.metrics import generative
from medjax.models import classifier as classifier_lib
from medjax.trainers import classifier as classifier_task
from tests.conftest import REPO, tiny_config

CONFIG = 'configs/classifier_brain.py'
# A tiny network for every test (the config's layout, narrower and shallower).
TINY = {'model.classifier.stem_features': 8,
        'model.classifier.stage_features': (8, 16),
        'model.classifier.blocks_per_stage': (1, 1),
        'model.classifier.feature_dim': 16}


def test_config_validates_and_documents_run_command():
  config = config_lib.load_config_file(f'{REPO}/{CONFIG}')
  config_lib.validate(config)
  assert config.model.name == 'classifier' and config.model.num_classes == 4
  with open(f'{REPO}/{CONFIG}') as f:
    docstring = ast.get_docstring(ast.parse(f.read()))
  assert f'--config={CONFIG}' in docstring


def _pairwise_auc(scores, positive):
  """Brute force: P(score_pos > score_neg) + P(tie) / 2 over all pairs."""
  pos, neg = scores[positive], scores[~positive]
  diff = pos[:, None] - neg[None, :]
  return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_auc_matches_references():
  rng = np.random.default_rng(0)
  # Rounded scores: many ties, which a rank AUC must count as one half.
  scores = np.round(rng.normal(size=300), 1)
  positive = rng.random(300) < 0.3 + 0.4 * (scores > 0)
  auc = classification.roc_auc(scores, positive)
  assert auc == pytest.approx(_pairwise_auc(scores, positive), abs=1e-12)
  assert 0.6 < auc < 0.95
  assert classification.roc_auc(scores, np.ones(300, bool)) != (
      classification.roc_auc(scores, np.ones(300, bool)))  # NaN
  logits = rng.normal(size=(200, 4))
  labels = rng.integers(0, 4, 200)
  logits[np.arange(200), labels] += 1.0  # better than chance
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  macro = classification.macro_ovr_auc(probs, labels)
  want = np.mean([_pairwise_auc(probs[:, c], labels == c) for c in range(4)])
  assert macro == pytest.approx(want, abs=1e-12)
  # A class absent from the labels has no AUC and is left out of the mean.
  labels3 = np.where(labels == 3, 0, labels)
  per = classification.per_class_auc(probs, labels3)
  assert np.isnan(per[3]) and np.isfinite(per[:3]).all()
  assert classification.macro_ovr_auc(probs, labels3) == pytest.approx(
      per[:3].mean())
  try:
    from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  assert auc == pytest.approx(skm.roc_auc_score(positive, scores), abs=1e-12)
  assert macro == pytest.approx(skm.roc_auc_score(
      labels, probs, multi_class='ovr', average='macro'), abs=1e-12)
  res = classification.bootstrap_intervals(probs, labels, 50)
  for key in ('accuracy', 'auc'):
    assert res[key]['ci_low'] <= res[key]['value'] <= res[key]['ci_high']


def test_model_shapes_features_and_dtypes():
  model = classifier_lib.Classifier(num_classes=3, stem_features=4,
                                    stem_stride=1, stage_features=(4, 8, 8),
                                    blocks_per_stage=(1, 1, 1), feature_dim=6)
  x = jax.random.uniform(jax.random.key(0), (2, 12, 12, 3), minval=-1)
  variables = jax.jit(lambda k: model.init(k, x, train=False))(
      jax.random.key(1))

  @jax.jit
  def apply(v, x):
    bf16 = model.clone(dtype=jnp.bfloat16)
    return (model.apply(v, x, train=False, return_features=True),
            model.apply(v, x, train=False,
                        method=classifier_lib.Classifier.features),
            bf16.apply(v, x, train=False))

  (logits, feats), feats2, logits_bf16 = apply(variables, x)
  assert logits.shape == (2, 3) and feats.shape == (2, 6)
  assert (np.asarray(feats) >= 0).all()  # after the ReLU
  np.testing.assert_array_equal(feats2, feats)
  assert logits_bf16.dtype == jnp.float32  # logits in float32 for any dtype
  p = variables['params']
  # Strides: 12 -> 12 (stage 0) -> 6 -> 3; projection where shapes change.
  assert 'proj' not in p['stage0_block0'] and 'proj' in p['stage1_block0']
  assert p['stage2_block0']['proj']['kernel'].shape == (1, 1, 8, 8)
  assert p['stage2_block0']['bn1']['scale'].sum() == 0  # zero-init residual


def _brightness_batch(rng, n, size=16):
  """Class c: images of brightness 40 + 50 c, plus noise (separable)."""
  labels = rng.integers(0, 4, n)
  x = 40 + 50 * labels[:, None, None, None] + rng.normal(
      0, 12, (n, size, size, 1))
  return {'image': np.clip(x, 0, 255).astype(np.uint8),
          'label': labels.astype(np.int32)}


def test_learns_an_easy_separable_problem(tmp_path):
  config = tiny_config(str(tmp_path), **TINY, **{
      'model.name': 'classifier', 'model.num_classes': 4,
      'optimizer.g_learning_rate': 1e-2, 'optimizer.b1': 0.9})
  task = classifier_task.ClassifierTask(config)
  state = task.init(jax.random.key(0))
  step = jax.jit(task.train_step)
  rng = np.random.default_rng(0)
  test = _brightness_batch(np.random.default_rng(1), 64)
  before = task.evaluate(state, test['image'], test['label'])
  losses = []
  for i in range(25):
    state, m = step(state, _brightness_batch(rng, 16), jax.random.key(i))
    losses.append(float(m.compute()['loss']))
  after = task.evaluate(state, test['image'], test['label'])
  assert int(state.step) == 25
  assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
  assert after['loss'] < before['loss']
  assert after['accuracy'] >= 0.75, after  # chance: 0.25
  assert after['auc'] >= 0.9, after


def test_augment_flips_and_black_translation():
  x = jnp.tile(jnp.linspace(-0.5, 0.5, 8)[None, None, :, None], (64, 8, 1, 1))
  out = classifier_task.augment(x, jax.random.key(0), ('hflip',))
  flipped = np.all(np.asarray(out) == np.asarray(x)[:, :, ::-1], (1, 2, 3))
  same = np.all(np.asarray(out) == np.asarray(x), (1, 2, 3))
  assert (flipped | same).all() and 10 < flipped.sum() < 54
  out = np.asarray(classifier_task.augment(x, jax.random.key(1),
                                           ('translation',)))
  # Shifted values (up to the float rounding of x + 1 - 1) or black fill.
  allowed = np.append(np.unique(np.asarray(x)), -1.0)
  assert (np.abs(out[..., None] - allowed).min(-1) < 1e-6).all()
  assert (out == -1.0).any()
  with pytest.raises(ValueError, match='rotate'):
    classifier_task.parse_augment('hflip,rotate')


@pytest.fixture(scope='module')
def cls_run(data_dir, tmp_path_factory):
  """configs/classifier_brain.py, tiny, 4 steps through `medjax.main`."""
  wd = str(tmp_path_factory.mktemp('classifier') / 'cls')
  overrides = {**TINY, 'dataset.image_size': 32, 'batch_size': 8,
               'dataset.phantom.image_size': 32,
               'dataset.phantom.num_train': 24,
               'dataset.phantom.num_test': 8, 'num_train_steps': 4,
               'eval_every_steps': 2, 'log_every_steps': 2,
               'checkpoint_every_steps': 2, 'sample_every_steps': 2,
               'num_sample_images': 4, 'dataset.data_dir': data_dir}
  flags = []
  for key, value in overrides.items():
    if isinstance(value, tuple):
      value = '(' + ','.join(map(str, value)) + ',)'
    flags.append(f'--config.{key}={value}')
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.main', f'--config={CONFIG}',
       f'--workdir={wd}', *flags],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'step 4/4 | ' in proc.stderr
  return wd


def test_training_through_main_keeps_best_auc(cls_run):
  best = json.load(open(os.path.join(cls_run, train.BEST_FILE)))
  assert best['metric'] == 'auc' and best['split'] == 'test'
  assert set(best['values']) == {'accuracy', 'auc', 'loss'}
  assert 0 <= best['values']['auc'] <= 1
  assert os.path.isdir(os.path.join(cls_run, 'checkpoints', '4'))
  panel = os.path.join(cls_run, 'samples', 'predictions_step_0000004.png')
  assert os.path.isfile(panel)


def test_extractor_features_and_card(cls_run):
  ext = features.ClassifierExtractor(cls_run)
  images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 1), np.uint8)
  f = ext(images)  # 16x16 images, resized to the classifier's 32x32
  assert f.shape == (5, 16) and f.dtype == np.float32
  np.testing.assert_array_equal(f, ext(images))
  # The hash is of the parameter values: the best checkpoint and the same
  # step read from checkpoints/ agree; another step differs.
  same = features.ClassifierExtractor(cls_run, checkpoint=ext.step)
  assert same.weights_sha256 == ext.weights_sha256
  other = features.ClassifierExtractor(cls_run, checkpoint=6 - ext.step)
  assert other.weights_sha256 != ext.weights_sha256
  desc = ext.describe()
  assert desc['extractor'] == 'classifier:mni_brain_phantom:cls'
  assert desc['fid_reference'] is False and len(desc['weights_sha256']) == 64
  assert '32x32' in desc['resize']
  assert card_lib.metric_label('fid', desc) == (
      'FD_classifier:mni_brain_phantom:cls')


def test_gan_evaluation_on_classifier_features(cls_run, data_dir, caplog):
  gan_wd = os.path.join(os.path.dirname(cls_run), 'gan')
  caplog.set_level('INFO')
  # Periodic evaluation during training includes the domain FD/KD.
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=2, **{
      'gan.eval_split': 'test', 'eval_every_steps': 2,
      'gan.eval_num_samples': 4, 'gan.eval_classifier_workdir': cls_run}),
                           gan_wd)
  line = [r.message for r in caplog.records
          if r.message.startswith('Validation at step 2')]
  assert line and 'fd_classifier=' in line[0] and 'kd_classifier=' in line[0]
  assert 'fid=' not in line[0] and 'nan' not in line[0]
  report = generative.evaluate_generator(
      gan_wd, num_samples=12, metrics=('fid', 'kid', 'precision_recall'),
      classifier_workdir=cls_run, num_bootstrap=3, audit=False)
  labels = [r['label'] for r in report['rows']]
  name = 'classifier:mni_brain_phantom:cls'
  assert labels == [f'FD_{name}', f'KD_{name}', f'precision ({name})',
                    f'recall ({name})']
  card = report['cards'][0]
  assert card['extractor'] == name and card['weights_sha256']
  assert 'FID' not in generative.format_table(report)
  with pytest.raises(ValueError, match='not a classifier'):
    features.ClassifierExtractor(gan_wd)


def test_evaluate_command_on_a_classifier_run(cls_run, tmp_path):
  out = str(tmp_path / 'eval')
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.evaluate', f'--workdir={cls_run}',
       f'--out={out}', '--num_bootstrap=50'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.load(open(os.path.join(out, 'metrics.json')))
  rows = {r['metric']: r for r in report['rows']}
  assert set(rows) == {'accuracy', 'auc', 'auc_glioma', 'auc_meningioma',
                       'auc_notumor', 'auc_pituitary'}
  assert report['card']['num_images'] == 8
  assert report['card']['split'] == 'test'
  acc = rows['accuracy']
  assert acc['ci_low'] <= acc['value'] <= acc['ci_high']
  assert '| auc |' in proc.stdout
