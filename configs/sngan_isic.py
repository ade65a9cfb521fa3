r"""SNGAN at 128x128 (Miyato et al. 2018) for ISIC dermoscopy (RGB), as in the
MedGAN study.

The networks and optimiser of configs/sngan_ct.py with three channels. Runs on
the embedded phantom (grey repeated to RGB) until the ISIC folder exists;
then add (class-per-folder layout, see docs/datasets.md):
  --config.dataset.name=image_folder --config.dataset.source.manual_dir=~/data/isic \
  --config.dataset.source.tag=isic

Run:
  python -m medjax.main --config=configs/sngan_isic.py --workdir=runs/sngan_isic
"""

import os

from medjax import config_lib


def get_config():
  c = config_lib.load_config_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sngan_ct.py'))
  c.dataset.channels = 3
  return c
