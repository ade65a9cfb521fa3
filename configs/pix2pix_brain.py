r"""Pix2Pix (Isola et al. 2017) as a restorer on the embedded brain phantom.

Pairs (degraded, original) made on device: HR = the 256x256 phantom slices,
input = a 5x5 box blur of them (`sr.lr_degradation`; any degradation spec of
the same size works, e.g. 'box(2)+rician(0.02)'). U-Net generator (8 down
/ up stages, 64 maps, skips, dropout 0.5 in training), 70x70 PatchGAN on the
(input, output) pair, loss BCE + 100 x L1, Adam 2e-4 (0.5, 0.999), batch 1
as the paper (BatchNorm with batch 1 acts like instance normalisation), 200
epochs of the 2,000 training slices. The best validation PSNR checkpoint is
kept; `python -m medjax.restore` applies it to a dataset like the SRGANs.
See docs/models/pix2pix.md and docs/restoration.md.

Run:
  python -m medjax.main --config=configs/pix2pix_brain.py --workdir=runs/pix2pix_brain
"""

from medjax import config_lib

EPOCHS = 200
TRAIN_IMAGES = 2000  # dataset.phantom.num_train


def get_config():
  c = config_lib.base_config()
  c.model.name = 'pix2pix'
  c.model.sr.scale = 1
  c.model.pix2pix.num_downs = 8
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.image_size = 256
  c.batch_size = 1
  c.num_train_steps = EPOCHS * TRAIN_IMAGES // c.batch_size
  c.sr.lr_degradation = 'box(5)'
  c.sr.hr_crop = 0
  c.sr.content_loss = 'l1'
  c.sr.content_weight = 100.0
  c.sr.adversarial_weight = 1.0
  c.sr.crop_border = 0
  c.sr.eval_batch_size = 8
  c.optimizer.name = 'adam'
  c.optimizer.g_learning_rate = 2e-4
  c.optimizer.d_learning_rate = 2e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.log_every_steps = 100
  c.eval_every_steps = 2000
  c.sample_every_steps = 2000
  c.checkpoint_every_steps = 2000
  return c
