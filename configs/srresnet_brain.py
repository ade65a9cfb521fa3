r"""SRResNet x4 (Ledig et al. 2017) on the embedded MNI152 brain phantom.

HR = random 96x96 crops of the 256x256 phantom slices; LR = the `x4_bicubic`
preset (OpenCV INTER_CUBIC /4, 24x24) made on device. 16 residual blocks, 64
maps, MSE loss, Adam 1e-4 (b1 0.9), batch 16, 100 epochs of the 2,000 training
slices (125 steps per epoch). The checkpoint with the best validation PSNR on
the test split is kept in `best/` (see docs/models/srresnet.md).

Run:
  python -m medjax.main --config=configs/srresnet_brain.py \
    --workdir=runs/srresnet_brain
Then SRGAN (configs/srgan_brain.py) starts from this run, and
  python -m medjax.evaluate --workdir=runs/srresnet_brain
prints PSNR/SSIM next to nearest/bilinear/bicubic.
"""

import math

from medjax import config_lib

EPOCHS = 100
TRAIN_IMAGES = 2000  # dataset.phantom.num_train


def get_config():
  c = config_lib.base_config()
  c.model.name = 'srresnet'
  c.model.sr.scale = 4
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.image_size = 256  # The phantom's stored size: no resize.
  c.dataset.phantom.image_size = 256
  c.batch_size = 16
  c.num_train_steps = EPOCHS * math.ceil(TRAIN_IMAGES / c.batch_size)
  c.sr.lr_degradation = 'x4_bicubic'
  c.sr.hr_crop = 96
  c.sr.content_loss = 'mse'
  c.sr.crop_border = 4
  c.optimizer.name = 'adam'
  c.optimizer.g_learning_rate = 1e-4
  c.optimizer.b1 = 0.9
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.sample_every_steps = 1000
  c.checkpoint_every_steps = 1000
  return c
