r"""DCGAN (Radford et al. 2016) at 64x64 on the embedded MNI152 brain phantom.

The paper's settings: 100-d N(0, 1) latent, transposed-conv generator with
BatchNorm + ReLU and tanh output, strided-conv discriminator with BatchNorm and
LeakyReLU(0.2), weights N(0, 0.02), Adam 2e-4 / 0.5 / 0.999, batch 128, one D
step then one non-saturating G step. See docs/models/dcgan.md.

Run:
  python -m medjax.main --config=configs/dcgan_brain.py --workdir=runs/dcgan_brain

Quick start (2-core CPU, a few minutes):
  python -m medjax.main --config=configs/dcgan_brain.py \
    --workdir=runs/dcgan_brain_quick --config.num_train_steps=300 \
    --config.batch_size=64
"""

from medjax import config_lib


def get_config():
  config = config_lib.base_config()
  config.num_train_steps = 10_000
  config.batch_size = 128
  config.dataset.name = 'mni_brain_phantom'
  config.dataset.image_size = 64
  config.model.name = 'dcgan'
  config.gan.eval_split = 'test'  # SWD + MS-SSIM diversity, eval_every_steps.
  return config
