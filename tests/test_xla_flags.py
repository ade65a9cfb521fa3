"""medjax picks XLA:CPU's convolution library before JAX starts."""

import importlib.metadata
import os

import pytest

import medjax

_X86 = dict(machine='x86_64', jaxlib_version='0.10.2', accelerator=False,
            started=False)


def test_eigen_convolutions_on_x86_cpu_machines():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  assert medjax.cpu_convolutions(env, **_X86) == 'eigen'
  assert env['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=8 '
                              + medjax.EIGEN_CONVOLUTIONS)
  # Idempotent: a second import sees its own flag.
  assert medjax.cpu_convolutions(env, **_X86) == 'eigen'
  assert env['XLA_FLAGS'].count(medjax.YNN_FLAG) == 1
  env = {}
  assert medjax.cpu_convolutions(env, **{**_X86, 'machine': 'AMD64'}) == 'eigen'
  assert env['XLA_FLAGS'] == medjax.EIGEN_CONVOLUTIONS


@pytest.mark.parametrize('change', [
    {'machine': 'arm64'},           # Not measured there.
    {'jaxlib_version': '0.10.1'},   # May not know the flag: XLA would abort.
    {'jaxlib_version': '0.9.0'},
    {'accelerator': True},          # GPU/TPU programs do not use XLA:CPU.
    {'started': True}])             # XLA has read its flags already.
def test_flags_left_alone(change):
  env = {'XLA_FLAGS': '--xla_dump_to=/tmp/x'}
  assert medjax.cpu_convolutions(env, **{**_X86, **change}) == 'ynn'
  assert env == {'XLA_FLAGS': '--xla_dump_to=/tmp/x'}


@pytest.mark.parametrize('value,library', [
    ('LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT', 'eigen'), ('', 'eigen'),
    ('LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
     'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION', 'ynn')])
def test_a_users_own_setting_is_kept(value, library):
  flags = f'{medjax.YNN_FLAG}={value}'
  env = {'XLA_FLAGS': flags}
  assert medjax.cpu_convolutions(env, **_X86) == library
  assert env == {'XLA_FLAGS': flags}


def test_this_process_chose_at_import():
  """The test process imported medjax before JAX started; XLA_FLAGS now
  says what it chose (and subprocesses inherit it)."""
  env = dict(os.environ)
  assert medjax.cpu_convolutions(env) == medjax.CPU_CONVOLUTIONS
  assert env == dict(os.environ)


def test_accelerator_plugins_are_found_by_entry_point(monkeypatch):
  real = importlib.metadata.entry_points
  assert not medjax._accelerator_plugin()  # pylint: disable=protected-access
  monkeypatch.setattr(
      importlib.metadata, 'entry_points',
      lambda group=None: ['xla_cuda12'] if group == 'jax_plugins'
      else real(group=group))
  assert medjax._accelerator_plugin()  # pylint: disable=protected-access
