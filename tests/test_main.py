"""Each shipped config runs two steps through `python -m medjax.main`."""

import os
import subprocess
import sys

import pytest

from medjax import main
from tests.conftest import REPO

# Small phantoms and batches; the architectures are the configs' own.
_CASES = {
    'dcgan_brain': ['--config.batch_size=8',
                    '--config.dataset.phantom.image_size=64',
                    '--config.dataset.phantom.num_train=16',
                    '--config.dataset.phantom.num_test=4'],
    'dcgan256_brain': ['--config.batch_size=4',
                       '--config.dataset.phantom.image_size=256',
                       '--config.dataset.phantom.num_train=8',
                       '--config.dataset.phantom.num_test=4'],
}


@pytest.mark.parametrize('name', sorted(_CASES))
def test_config_runs_two_steps_through_main(name, data_dir, tmp_path):
  wd = tmp_path / name
  env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.main', f'--config=configs/{name}.py',
       f'--workdir={wd}', '--config.num_train_steps=2',
       '--config.log_every_steps=1', '--config.num_sample_images=4',
       f'--config.dataset.data_dir={data_dir}', *_CASES[name]],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'step 2/2 | ' in proc.stderr  # The progress line.
  assert os.path.exists(wd / 'checkpoints' / '2')
  assert os.path.exists(wd / 'samples' / 'step_0000002.png')
  assert os.path.exists(wd / 'config.json')
  # The compiled step is kept for a resumed run.
  assert any(f.startswith('jit_step_fn-')
             for f in os.listdir(wd / 'xla_cache'))


def test_compilation_cache_dir():
  assert main.compilation_cache_dir(None, 'w', {}) == os.path.join(
      'w', 'xla_cache')
  assert main.compilation_cache_dir(
      None, 'w', {'JAX_COMPILATION_CACHE_DIR': '/c'}) == '/c'
  assert main.compilation_cache_dir(
      '/f', 'w', {'JAX_COMPILATION_CACHE_DIR': '/c'}) == '/f'
  assert main.compilation_cache_dir(
      'none', 'w', {'JAX_COMPILATION_CACHE_DIR': '/c'}) is None
