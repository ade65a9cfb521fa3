r"""Trains a medjax experiment.

  python -m medjax.main --config=configs/dcgan_brain.py --workdir=runs/dcgan_brain

Override any config key: `--config.batch_size=64`. Unknown keys are an error.
Run the same command again to resume from the latest checkpoint; compiled
programs are kept in `<workdir>/xla_cache` (`--compilation_cache`), so the
resumed run loads its train step instead of compiling it again.
"""

import logging as pylogging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from medjax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None,
    'Call jax.distributed.initialize() (multi-process runs). Default: when '
    'JAX_COORDINATOR_ADDRESS is set or SLURM runs more than one task.')
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', None,
    'Persistent XLA compilation cache directory. Default: '
    'JAX_COMPILATION_CACHE_DIR if set, else <workdir>/xla_cache. "none" '
    'turns it off.')
flags.mark_flags_as_required(['config', 'workdir'])


def compilation_cache_dir(flag: str | None, workdir: str,
                          environ=os.environ) -> str | None:
  """Where compiled programs are cached.

  Args:
    flag: --compilation_cache (None when not given).
    workdir: the run directory.
    environ: the environment (JAX_COMPILATION_CACHE_DIR).

  Returns:
    The directory, or None for no cache.
  """
  if flag is None:
    flag = environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.join(
        workdir, 'xla_cache')
  return None if flag.lower() in ('', 'none') else flag


def _cluster_detected() -> bool:
  return ('JAX_COORDINATOR_ADDRESS' in os.environ
          or int(os.environ.get('SLURM_NTASKS', '1')) > 1)


def _quiet_orbax(record) -> bool:
  # Orbax logs every save step by step at INFO; keep its warnings only.
  return record.levelno >= pylogging.WARNING or 'orbax' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_quiet_orbax)
  # Before anything compiles. JAX caches only programs that took at least
  # jax_persistent_cache_min_compile_time_secs (1 s) to compile.
  cache = compilation_cache_dir(_COMPILATION_CACHE.value, _WORKDIR.value)
  jax.config.update('jax_compilation_cache_dir', cache)
  distributed = _DISTRIBUTED.value
  if distributed or (distributed is None and _cluster_detected()):
    jax.distributed.initialize()
  logging.info('JAX process %d/%d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
