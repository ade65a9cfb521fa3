"""The benchmark scripts run (speed itself is measured in bench/, never here)."""

import importlib.util
import os

from tests.conftest import REPO
from tests.test_sr import sr_config


def _load(name):
  spec = importlib.util.spec_from_file_location(
      f'bench_{name}', os.path.join(REPO, 'bench', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_train_step_bench_times_the_srgan_step(tmp_path):
  bench = _load('train_step')
  config = sr_config(str(tmp_path), **{
      'model.name': 'srgan', 'sr.content_loss': 'vgg',
      'dataset.image_size': 16})
  row = bench.measure(config, batch_size=2, steps=1, warmup=0)
  assert row['model'] == 'srgan' and row['images_per_s'] > 0
  assert row['gflop_per_image'] > 0


def test_metrics_bench_cases_run():
  bench = _load('metrics')
  for row in (bench.bench_ssim(2, iters=1, warmup=0),
              bench.bench_lpips('alex', 1, iters=1, warmup=0)):
    assert row['images_per_s'] > 0 and row['compile_s'] >= 0
