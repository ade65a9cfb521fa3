r"""Class-conditional DCGAN at 64x64 on the embedded MNI152 brain phantom.

The DCGAN of configs/dcgan_brain.py with the class as input: G gets
concat(z, learned 50-d label embedding), D is the DCGAN trunk with a
projection head (Miyato & Koyama 2018). The phantom's four classes (glioma,
meningioma, notumor, pituitary) can then be targeted by
`python -m medjax.sample --per_class=... --classes=...`. Adam 2e-4 / 0.5,
batch 128. See docs/models/cdcgan.md.

Run:
  python -m medjax.main --config=configs/cdcgan_brain.py --workdir=runs/cdcgan_brain
"""

from medjax import config_lib


def get_config():
  c = config_lib.base_config()
  c.model.name = 'cdcgan'
  c.model.num_classes = 4
  c.model.embed_dim = 50
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.image_size = 64
  c.batch_size = 128
  c.num_train_steps = 10_000
  c.gan.eval_split = 'test'  # SWD + MS-SSIM diversity every eval_every_steps.
  return c
