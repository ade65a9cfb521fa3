r"""Tumour-class classifier at 64x64 on the embedded MNI152 brain phantom.

A compact ResNet (3x3 stem conv with stride 2, three stages of two basic
residual blocks, 32/64/128 channels at 32x32/16x16/8x8, global average
pooling, a 128-d penultimate layer, 4 logits; 0.71M parameters) trained with softmax cross-entropy on the
phantom's four classes (glioma, meningioma, notumor, pituitary); random
left-right flips and translations; Adam 1e-3 (0.9, 0.999), batch 64, 3,000
steps (~96 epochs of the 2,000 training slices), learning rate x0.1 after
2,000 steps. Validation on the test split every 250 steps (accuracy, macro
one-vs-rest ROC AUC); the best AUC is kept in best/. See
docs/models/classifier.md.

Run, then report test accuracy / AUC with 95% CIs:
  python -m medjax.main --config=configs/classifier_brain.py --workdir=runs/classifier_brain
  python -m medjax.evaluate --workdir=runs/classifier_brain

Its penultimate features give a domain Frechet distance for a GAN run
(labelled FD_classifier:..., never FID):
  python -m medjax.evaluate --workdir=runs/dcgan_brain --classifier_workdir=runs/classifier_brain
"""

from medjax import config_lib


def get_config():
  c = config_lib.base_config()
  c.model.name = 'classifier'
  c.model.num_classes = 4
  c.model.classifier.stem_features = 32
  c.model.classifier.stem_stride = 2
  c.model.classifier.stage_features = (32, 64, 128)
  c.model.classifier.blocks_per_stage = (2, 2, 2)
  c.model.classifier.feature_dim = 128
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.image_size = 64
  c.batch_size = 64
  c.num_train_steps = 3000
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 500
  c.sample_every_steps = 500
  c.classifier.augment = 'hflip,translation'
  c.classifier.eval_split = 'test'
  c.optimizer.name = 'adam'
  c.optimizer.g_learning_rate = 1e-3
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.decay_every_steps = 2000
  c.optimizer.decay_factor = 0.1
  return c
