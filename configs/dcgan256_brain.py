r"""DCGAN at 256x256 on the embedded MNI152 brain phantom.

The variant used to compare dataset quality at full resolution: generator of
five transposed convolutions with 512, 256, 128, 64 and 1 feature maps, 4x4
kernels except a 10x10 last layer (stride 8, padding 1: 32 -> 256), BatchNorm +
ReLU after the first four, tanh output; discriminator of five convolutions with
64, 128, 256, 512 and 1 feature maps, a 10x10 first kernel (stride 8,
padding 1: 256 -> 32) and 4x4 after, BatchNorm after the 2nd-4th, LeakyReLU(0.2),
sigmoid output. Adam 2e-4 / 0.5 / 0.999, batch 128. See docs/models/dcgan.md.

Run:
  python -m medjax.main --config=configs/dcgan256_brain.py \
    --workdir=runs/dcgan256_brain
"""

from medjax import config_lib


def get_config():
  config = config_lib.base_config()
  config.num_train_steps = 20_000
  config.batch_size = 128
  config.dataset.name = 'mni_brain_phantom'
  config.dataset.image_size = 256
  config.model.name = 'dcgan'
  config.model.g_kernels = (4, 4, 4, 4, 10)
  config.model.g_strides = (1, 2, 2, 2, 8)
  config.model.g_paddings = (0, 1, 1, 1, 1)
  config.model.d_kernels = (10, 4, 4, 4, 4)
  config.model.d_strides = (8, 2, 2, 2, 1)
  config.model.d_paddings = (1, 1, 1, 1, 0)
  config.gan.eval_split = 'test'  # SWD + MS-SSIM diversity, eval_every_steps.
  return config
