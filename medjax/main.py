r"""Trains a medjax experiment.

  python -m medjax.main --config=configs/dcgan_brain.py --workdir=runs/dcgan_brain

Override any config key: `--config.batch_size=64`. Unknown keys are an error.
Run the same command again to resume from the latest checkpoint.
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
flags.mark_flags_as_required(['config', 'workdir'])


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
  distributed = _DISTRIBUTED.value
  if distributed or (distributed is None and _cluster_detected()):
    jax.distributed.initialize()
  logging.info('JAX process %d/%d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
