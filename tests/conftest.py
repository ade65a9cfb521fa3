"""Test settings: fast compiles on CPU, tiny configs, one shared phantom."""

import importlib.util
import os
import tempfile

# Set before JAX is imported anywhere; subprocesses inherit them. Compilation
# dominates tiny models, so most XLA optimisations are off.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # pylint: disable=g-import-not-at-top

from medjax import config_lib  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench(name: str):
  """bench/<name>.py as a module (bench/ is scripts, not a package)."""
  spec = importlib.util.spec_from_file_location(
      f'bench_{name}', os.path.join(REPO, 'bench', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='session', autouse=True)
def _temporary_files_under_pytest(tmp_path_factory):
  """Temporary files of the tests and their subprocesses go under pytest's
  own temporary tree, which pytest prunes (medjax's builders already clean
  up after TFDS, `tfds_utils.no_leftover_tempdirs`; this catches the rest)."""
  folder = str(tmp_path_factory.mktemp('tmp'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('TMPDIR', folder)
    patch.setattr(tempfile, 'tempdir', folder)
    yield


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS data dir shared by the session (the tiny phantom is built once)."""
  return str(tmp_path_factory.mktemp('tfds'))


def tiny_config(data_dir: str, **overrides):
  """A 16x16 DCGAN on a 24-image 32px phantom: compiles and runs in seconds."""
  c = config_lib.base_config()
  c.num_train_steps = 4
  c.batch_size = 8
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.sample_every_steps = 2
  c.num_sample_images = 4
  c.dataset.image_size = 16
  c.dataset.data_dir = data_dir
  c.dataset.phantom.image_size = 32
  c.dataset.phantom.num_train = 24
  c.dataset.phantom.num_test = 8
  c.model.g_features = (16, 8)
  c.model.g_kernels = (4, 4, 4)
  c.model.g_strides = (1, 2, 2)
  c.model.g_paddings = (0, 1, 1)
  c.model.d_features = (8, 16)
  c.model.d_kernels = (4, 4, 4)
  c.model.d_strides = (2, 2, 1)
  c.model.d_paddings = (1, 1, 0)
  for key, value in overrides.items():
    parent = c
    *path, leaf = key.split('.')
    for part in path:
      parent = parent[part]
    parent[leaf] = value
  return c


def tiny_flags(data_dir: str, **overrides) -> list[str]:
  """`tiny_config` as --config.* flags for `python -m medjax.main`."""
  flat = config_lib.flatten(tiny_config(data_dir, **overrides))
  base = config_lib.flatten(config_lib.base_config())
  out = []
  for key, value in flat.items():
    if value != base[key]:
      if isinstance(value, tuple):
        value = '(' + ','.join(map(str, value)) + ',)'
      out.append(f'--config.{key}={value}')
  return out
