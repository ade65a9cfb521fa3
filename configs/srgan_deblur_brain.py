r"""SRGAN as a dataset repairer: same-size deblurring at 384x384 (scale 1).

The study's repair variant: pairs are (`srgan_train`-degraded, original), i.e.
HR = the 512x512 originals resized to 384x384 with INTER_AREA (on device,
`dataset.degradation`), LR = a 5x5 box blur of HR (together exactly the
`srgan_train` preset of the originals). Generator with 128 feature maps (no
upsampling), discriminator starting at 96 maps with global average pooling
(384x384 inputs), batch 24, SGD momentum 0.9, lr 0.02 decayed x0.1 every 1000
steps, 360 epochs of the 2,000 phantom training slices. The model then
repairs the `primary` dataset with `python -m medjax.restore`.

Needs the torchvision VGG19 weights, converted once:
  python -m medjax.weights convert --kind=vgg19 \
    --src=/path/to/vgg19-dcbb9e9d.pth --out=weights/vgg19

Run:
  python -m medjax.main --config=configs/srgan_deblur_brain.py \
    --workdir=runs/srgan_deblur_brain
"""

import math

from medjax import config_lib

EPOCHS = 360
TRAIN_IMAGES = 2000  # dataset.phantom.num_train


def get_config():
  c = config_lib.base_config()
  c.model.name = 'srgan'
  c.model.sr.scale = 1
  c.model.sr.features = 128
  c.model.sr.d_features = 96
  c.model.sr.d_pool = 'avg'
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.phantom.image_size = 512  # The study's originals are 512x512.
  c.dataset.image_size = 384
  c.dataset.degradation = 'resize(384,384,area)'  # HR, on device.
  c.batch_size = 24
  c.num_train_steps = EPOCHS * math.ceil(TRAIN_IMAGES / c.batch_size)
  c.sr.lr_degradation = 'box(5)'
  c.sr.hr_crop = 0  # Whole 384x384 images.
  c.sr.content_loss = 'vgg'
  c.sr.vgg_weights = 'weights/vgg19'
  c.sr.adversarial_weight = 1e-3
  c.sr.crop_border = 0
  c.optimizer.name = 'sgd'
  c.optimizer.momentum = 0.9
  c.optimizer.g_learning_rate = 0.02
  c.optimizer.d_learning_rate = 0.02
  c.optimizer.decay_every_steps = 1000
  c.optimizer.decay_factor = 0.1
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.sample_every_steps = 1000
  c.checkpoint_every_steps = 1000
  return c
