"""Generator evaluation: cards, labels, intervals, determinism, the command."""

import json
import os
import subprocess
import sys

import pytest

from medjax import train
from medjax.metrics import card as card_lib
from medjax.metrics import features
from medjax.metrics import generative
from tests.conftest import REPO, tiny_config


@pytest.fixture(scope='module')
def gan_run(data_dir, tmp_path_factory):
  """The tiny 16x16 DCGAN trained for 2 steps."""
  wd = str(tmp_path_factory.mktemp('gan_eval') / 'dcgan')
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=2), wd)
  return wd


@pytest.fixture(scope='module')
def pixel_report(gan_run):
  return generative.evaluate_generator(
      gan_run, num_samples=12, extractor=features.PixelExtractor(8),
      num_bootstrap=10, num_pairs=50, audit=False, seed=3)


def test_report_rows_and_cards(pixel_report):
  labels = [r['label'] for r in pixel_report['rows']]
  assert labels == ['SWDx1e3_avg', 'MS-SSIM diversity (generated)',
                    'MS-SSIM diversity (real, reference)', 'FD_pixels8',
                    'KD_pixels8', 'precision (pixels8)', 'recall (pixels8)']
  assert len(pixel_report['cards']) == len(labels)
  for c in pixel_report['cards']:
    for key in ('metric', 'value', 'ci_low', 'ci_high', 'ci_method',
                'extractor', 'weights_sha256', 'resize', 'num_real',
                'num_generated', 'reference', 'seed', 'date', 'warnings'):
      assert key in c, key
    assert c['reference'] == {'dataset': 'mni_brain_phantom', 'split': 'test'}
    assert c['seed'] == 3 and c['num_resamples'] == 10
    # < 50 images: every value is flagged.
    assert any('fewer than 50' in w for w in c['warnings'])
    # The re-centred bootstrap interval holds the point value.
    assert c['ci_low'] <= c['value'] <= c['ci_high'], c['label']
  cards = {c['metric']: c for c in pixel_report['cards']}
  assert cards['fid']['num_real'] == 8 and cards['fid']['num_generated'] == 12
  assert cards['swd']['num_generated'] == 8  # as many as real images
  assert any('strongly biased' in w and 'KID' in w
             for w in cards['fid']['warnings'])
  assert any('subset size 8 < 1000' in w for w in cards['kid']['warnings'])
  assert not any('strongly biased' in w for w in cards['kid']['warnings'])
  assert cards['fid']['extractor'] == 'pixels8'
  assert cards['fid']['weights_sha256'] is None
  assert 'std_over_subsets' in cards['kid']['details']
  json.dumps(pixel_report, allow_nan=False)
  table = generative.format_table(pixel_report)
  assert '| FD_pixels8 |' in table and 'FID' not in table.split('\n\n')[1]


def test_determinism_for_a_seed(gan_run, pixel_report):
  again = generative.evaluate_generator(
      gan_run, num_samples=12, extractor=features.PixelExtractor(8),
      num_bootstrap=10, num_pairs=50, audit=False, seed=3)
  assert again['rows'] == pixel_report['rows']
  other = generative.evaluate_generator(
      gan_run, num_samples=12, metrics=('swd',), num_bootstrap=0,
      audit=False, seed=4)
  assert other['rows'][0]['value'] != pixel_report['rows'][0]['value']
  assert other['rows'][0]['ci_low'] is None  # no resamples, no interval


def test_fid_label_rule():
  # An end-to-end run with random Inception weights took 160 s of CPU here
  # (Inception at 299x299 plus 2048-d eigendecompositions), so the rule is
  # tested on the extractors' descriptions and on cards.
  random_inception = features.InceptionExtractor.random(0).describe()
  assert random_inception['extractor'] == 'inception_random_TEST_ONLY'
  assert card_lib.metric_label('fid', random_inception) == (
      'FD_inception_random_TEST_ONLY')
  assert card_lib.metric_label('kid', random_inception) == (
      'KD_inception_random_TEST_ONLY')
  assert card_lib.metric_label('fid', features.PixelExtractor().describe()
                               ) == 'FD_pixels32'
  real = {'extractor': 'inception_fid', 'fid_reference': True}
  assert card_lib.metric_label('fid', real) == 'FID'
  assert card_lib.metric_label('kid', real) == 'KID'
  card = card_lib.make_card('fid', 12.0, None, extractor=real, num_real=4096,
                            num_generated=4096, reference={}, seed=0)
  assert card['label'] == 'FID' and card['warnings'] == []
  card = card_lib.make_card('fid', 12.0, None, extractor=real, num_real=4096,
                            num_generated=2047, reference={}, seed=0)
  assert len(card['warnings']) == 1 and 'compare KID' in card['warnings'][0]


def test_missing_weights_are_explained(gan_run, tmp_path):
  with pytest.raises(FileNotFoundError, match='medjax.weights convert'):
    features.InceptionExtractor(str(tmp_path / 'none'))
  with pytest.raises(FileNotFoundError, match='pt_inception'):
    generative.evaluate_generator(gan_run, num_samples=4, metrics=('fid',),
                                  audit=False)
  report = generative.evaluate_generator(
      gan_run, num_samples=4, metrics=None, num_bootstrap=0, num_pairs=10,
      audit=False)
  assert set(report['skipped']) == {'fid', 'kid', 'precision_recall'}


def test_command_writes_metrics_and_audit(gan_run, tmp_path):
  out = str(tmp_path / 'eval')
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.evaluate', f'--workdir={gan_run}',
       f'--out={out}', '--num_samples=16', '--num_bootstrap=5'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '| SWDx1e3_avg |' in proc.stdout
  assert 'Memorisation audit (pixels32 features' in proc.stdout
  report = json.load(open(os.path.join(out, 'metrics.json')))
  assert report['generation'] == {'num_samples': 16, 'seed': 0}
  assert report['audit']['num_generated'] == 16
  assert report['audit']['num_train'] == 24
  assert os.path.isfile(os.path.join(out, 'metrics.md'))
  assert os.path.isfile(os.path.join(out, 'audit_closest_pairs.png'))
