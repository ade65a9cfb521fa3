r"""SRGAN x4 (Ledig et al. 2017) on the embedded MNI152 brain phantom.

The SRResNet generator of configs/srresnet_brain.py, started from that run's
best checkpoint (`sr.init_from`) and fine-tuned for 50 epochs with the VGG54
content loss (VGG19 conv5_4 after ReLU, features / 12.75) + 1e-3 x the
adversarial loss; the discriminator of the paper (eight 3x3 convolutions 64 ->
512, dense 1024, dense 1). Adam 1e-4 (b1 0.9) for both, batch 16. The
checkpoint with the best validation PSNR is kept in `best/` (GAN training is
not monotone).

Needs the torchvision VGG19 weights, converted once:
  python -m medjax.weights convert --kind=vgg19 \
    --src=/path/to/vgg19-dcbb9e9d.pth --out=weights/vgg19

Run (after configs/srresnet_brain.py):
  python -m medjax.main --config=configs/srgan_brain.py \
    --workdir=runs/srgan_brain
"""

import math
import os

from medjax import config_lib

EPOCHS = 50
TRAIN_IMAGES = 2000  # dataset.phantom.num_train


def get_config():
  # Data, crops, degradation, generator and Adam settings of the SRResNet run.
  c = config_lib.load_config_file(os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'srresnet_brain.py'))
  c.model.name = 'srgan'
  c.num_train_steps = EPOCHS * math.ceil(TRAIN_IMAGES / c.batch_size)
  c.sr.init_from = 'runs/srresnet_brain'
  c.sr.content_loss = 'vgg'
  c.sr.vgg_layer = 'conv5_4'
  c.sr.vgg_after_relu = True
  c.sr.vgg_weights = 'weights/vgg19'
  c.sr.adversarial_weight = 1e-3
  c.optimizer.d_learning_rate = 1e-4
  c.eval_every_steps = 500
  c.sample_every_steps = 500
  c.checkpoint_every_steps = 500
  return c
