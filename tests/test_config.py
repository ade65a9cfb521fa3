"""Config schema: locked keys, validation, saved-config round trip."""

import ast
import subprocess
import sys

import pytest

from medjax import config_lib
from tests.conftest import REPO, tiny_config


@pytest.mark.parametrize('name', ['dcgan_brain', 'dcgan256_brain'])
def test_configs_validate_and_document_run_command(name):
  path = f'{REPO}/configs/{name}.py'
  config_lib.validate(config_lib.load_config_file(path))
  with open(path) as f:
    docstring = ast.get_docstring(ast.parse(f.read()))
  assert f'--config=configs/{name}.py' in docstring


def test_unknown_key_in_config_file_fails():
  config = config_lib.base_config()
  with pytest.raises(AttributeError, match='bach_size'):
    config.bach_size = 3


def test_validate_names_unknown_and_missing_keys():
  config = config_lib.base_config()
  with config.unlocked():
    config.model.nfg = 3
    del config.seed
  with pytest.raises(ValueError, match=r'unknown config keys: model\.nfg.*'
                     r'missing config keys: seed'):
    config_lib.validate(config)


def test_validate_rejects_bad_values():
  config = config_lib.base_config()
  config.model.dtype = 'float8'
  with pytest.raises(ValueError, match='model.dtype'):
    config_lib.validate(config)
  config = config_lib.base_config()
  config.batch_size = 0
  with pytest.raises(ValueError, match='batch_size'):
    config_lib.validate(config)


def test_json_round_trip_and_differences(tmp_path):
  config = tiny_config(str(tmp_path))
  again = config_lib.from_json(config_lib.to_json(config))
  assert config_lib.flatten(again) == config_lib.flatten(config)
  assert not config_lib.experiment_differences(config, again)
  again.num_train_steps = 99  # Run control: resuming longer is fine.
  assert not config_lib.experiment_differences(config, again)
  again.model.latent_dim = 7
  assert config_lib.experiment_differences(config, again) == [
      'model.latent_dim: 100 -> 7']


def test_unknown_override_on_command_line_fails(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.main', '--config=configs/dcgan_brain.py',
       f'--workdir={tmp_path}', '--config.bach_size=16'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert 'bach_size' in proc.stderr
  assert not list(tmp_path.iterdir())  # Nothing written.
