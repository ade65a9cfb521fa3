r"""StarGAN (Choi et al. 2018) between the phantom's four classes at 128x128.

One generator translates a slice to any target class (glioma, meningioma,
notumor, pituitary) given as a one-hot label; the critic has a source head
(WGAN-GP) and a domain-classification head. The paper's settings: 6 residual
blocks in G, 6 stride-2 layers in D, lambda_cls 1, lambda_rec 10, lambda_gp
10, n_critic 5 (G updated every 5th step), Adam 1e-4 (0.5, 0.999), batch 16.
Panels show each test image translated to every class. See
docs/models/stargan.md.

Run:
  python -m medjax.main --config=configs/stargan_brain.py --workdir=runs/stargan_brain
"""

from medjax import config_lib


def get_config():
  c = config_lib.base_config()
  c.model.name = 'stargan'
  c.model.num_classes = 4
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.image_size = 128
  c.batch_size = 16
  c.num_train_steps = 200_000
  c.gan.loss = 'wgan'
  c.gan.gp_weight = 10.0
  c.gan.d_steps = 5
  c.optimizer.g_learning_rate = 1e-4
  c.optimizer.d_learning_rate = 1e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.num_sample_images = 4
  c.sample_every_steps = 1000
  c.checkpoint_every_steps = 1000
  return c
