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

from medjax import config_lib


def get_config():
  c = config_lib.base_config()
  c.model.name = 'sngan'
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.image_size = 128
  c.dataset.channels = 3
  c.batch_size = 64
  c.num_train_steps = 20_000
  c.gan.loss = 'nonsaturating'
  c.optimizer.g_learning_rate = 2e-4
  c.optimizer.d_learning_rate = 2e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.gan.eval_split = 'test'  # SWD + MS-SSIM diversity every eval_every_steps.
  return c
