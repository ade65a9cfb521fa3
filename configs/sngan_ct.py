r"""SNGAN at 128x128 (Miyato et al. 2018) for chest CT, as in the MedGAN study.

Generator: dense to 4x4x512, five 4x4/2 transposed convolutions with
BatchNorm + ReLU (512, 512, 256, 128, 64 maps), 3x3 convolution, tanh.
Discriminator: the paper's "standard CNN" (3x3/1 and 4x4/2 convolutions, 64
to 512 maps, LeakyReLU 0.2) with spectral normalisation on every convolution
and the dense output; sigmoid / BCE (non-saturating) loss. Adam 2e-4 (0.5,
0.999; the paper's setting C), batch 64, inputs resized to 128x128 and scaled to [-1, 1]. See
docs/models/sngan.md.

Runs on the embedded phantom until the CT folder exists; then add
  --config.dataset.name=image_folder --config.dataset.source.manual_dir=~/data/chest_ct

Run:
  python -m medjax.main --config=configs/sngan_ct.py --workdir=runs/sngan_ct
"""

from medjax import config_lib


def get_config():
  c = config_lib.base_config()
  c.model.name = 'sngan'
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.image_size = 128
  c.dataset.channels = 1
  c.batch_size = 64
  c.num_train_steps = 20_000
  c.gan.loss = 'nonsaturating'
  c.optimizer.g_learning_rate = 2e-4
  c.optimizer.d_learning_rate = 2e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.gan.eval_split = 'test'  # SWD + MS-SSIM diversity every eval_every_steps.
  return c
