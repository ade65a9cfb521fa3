"""TFDS builder of `mni_brain_phantom`, the embedded default dataset.

A PHANTOM, NOT PATIENT DATA: 2D slices of the healthy MNI152 T1 template with
synthetic, hand-modelled lesions (see `medjax.data.phantom`). It is for trying
and testing the medjax tools offline; it supports no clinical claim.

Built without TensorFlow: images are zlib-encoded uint8 tensors (not
`tfds.features.Image`, whose PNG encoding needs TF) written as array_record,
which `tfds.data_source` reads without TF. Nothing is downloaded: the template
comes with nilearn.

Preparation is safe to interrupt: TFDS writes into an `incomplete.*` folder
next to the version folder and renames it only when everything is written, so
a killed run leaves no folder that reads as a prepared dataset; `prepare`
removes such leftovers once they are clearly stale.
"""

from __future__ import annotations

import dataclasses
import time

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from medjax.data import phantom
from medjax.data.builders import tfds_utils

_NAME = 'mni_brain_phantom'

_DESCRIPTION = """\
PHANTOM DATA - NOT FOR CLINICAL CLAIMS. Synthetic brain-tumour classification
slices for trying medjax offline. Every image is a 2D slice (axial, coronal or
sagittal) of ONE healthy average brain, the skull-stripped MNI152 2009
nonlinear symmetric T1 template shipped with nilearn, resampled with a random
affine and elastic warp, shaded by a smooth bias field and corrupted by Rician
noise. Three of the four classes carry a synthetic lesion drawn by hand-written
rules (glioma: irregular intra-axial mass with ring and oedema; meningioma:
bright extra-axial mass on the brain surface; pituitary: mass in the sella);
'notumor' has none. The class names mirror public brain-tumour MRI
classification sets, but the images say nothing about real tumours, scanners
or patients: results on this phantom must not be reported as medical evidence.
"""

_CITATION = """\
@article{fonov2011unbiased,
  title={Unbiased average age-appropriate atlases for pediatric studies},
  author={Fonov, Vladimir and Evans, Alan C and Botteron, Kelly and
          Almli, C Robert and McKinstry, Robert C and Collins, D Louis and
          {Brain Development Cooperative Group}},
  journal={NeuroImage},
  volume={54},
  number={1},
  pages={313--327},
  year={2011}
}
"""

_HOMEPAGE = 'https://nist.mni.mcgill.ca/icbm-152-nonlinear-atlases-2009/'


@dataclasses.dataclass
class MniBrainPhantomConfig(tfds.core.BuilderConfig):
  """A phantom variant: the `phantom.PhantomParams` fields."""
  image_size: int = 256
  num_train: int = 2000
  num_test: int = 400
  seed: int = 0

  @property
  def params(self) -> phantom.PhantomParams:
    return phantom.PhantomParams(image_size=self.image_size,
                                 num_train=self.num_train,
                                 num_test=self.num_test, seed=self.seed)


def _config_name(params: phantom.PhantomParams) -> str:
  if params == phantom.PhantomParams():
    return 'default'
  return (f's{params.image_size}_tr{params.num_train}_te{params.num_test}'
          f'_seed{params.seed}')


def _make_config(params: phantom.PhantomParams) -> MniBrainPhantomConfig:
  if params.image_size < 8:
    raise ValueError(f'image_size must be >= 8, got {params.image_size}')
  if min(params.num_train, params.num_test) < 1:
    raise ValueError(f'both splits need examples, got {params}')
  return MniBrainPhantomConfig(
      name=_config_name(params),
      description=(f'{params.image_size}x{params.image_size} phantom slices, '
                   f'{params.num_train} train / {params.num_test} test, '
                   f'seed {params.seed}.'),
      **dataclasses.asdict(params))


_DEFAULT_CONFIG = _make_config(phantom.PhantomParams())


def config_for(image_size: int, num_train: int, num_test: int,
               seed: int) -> MniBrainPhantomConfig:
  """The builder config of a phantom variant.

  Args:
    image_size: side of the square images.
    num_train: number of training examples.
    num_test: number of test examples.
    seed: root seed.

  Returns:
    The predefined 'default' config for the default values, otherwise a
    config named like 's64_tr40_te8_seed0'.
  """
  params = phantom.PhantomParams(image_size=image_size, num_train=num_train,
                                 num_test=num_test, seed=seed)
  if params == _DEFAULT_CONFIG.params:
    return _DEFAULT_CONFIG
  return _make_config(params)


class MniBrainPhantom(tfds.core.GeneratorBasedBuilder):
  """Synthetic brain-tumour PHANTOM slices of the MNI152 T1 template."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [_DEFAULT_CONFIG]
  DEFAULT_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            # Not tfds.features.Image: encoding it to PNG needs TensorFlow.
            'image': tfds.features.Tensor(
                shape=(size, size, 1), dtype=np.uint8,
                encoding=tfds.features.Encoding.ZLIB),
            'label': tfds.features.ClassLabel(names=phantom.CLASSES),
            'plane': tfds.features.ClassLabel(names=phantom.PLANES),
            'slice_index': tfds.features.Scalar(np.int32),
            'id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage=_HOMEPAGE,
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the template ships with nilearn.
    return {split: self._generate_examples(split) for split in phantom.SPLITS}

  def _generate_examples(self, split: str):
    params = self.builder_config.params
    num = params.num_examples(split)
    step = max(1, num // 10)  # Progress in logs too, not only in tqdm.
    for i, example in enumerate(phantom.generate(params, split)):
      if (i + 1) % step == 0 or i + 1 == num:
        logging.info('Phantom %s: %d/%d examples generated.', split, i + 1,
                     num)
      yield example['id'], example


def prepare(data_dir: str | None,
            params: phantom.PhantomParams) -> tfds.core.DatasetBuilder:
  """Generates the phantom dataset unless it is already there.

  Idempotent and cheap once prepared (reads the dataset info only).

  Args:
    data_dir: TFDS data dir; None for TFDS's default ($TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    params: the variant to prepare.

  Returns:
    The builder, prepared (array_record files, readable with
    `builder.as_data_source(split)` or `tfds.data_source`).
  """
  config = config_for(params.image_size, params.num_train, params.num_test,
                      params.seed)
  with tfds_utils.no_leftover_tempdirs():
    builder = MniBrainPhantom(config=config, data_dir=data_dir,
                              file_format='array_record')
  if builder.is_prepared():
    logging.info('Phantom dataset %s already prepared in %s.',
                 builder.info.full_name, builder.data_dir)
    return builder
  tfds_utils.remove_stale_incomplete(builder)
  logging.info(
      'Preparing the PHANTOM dataset %s in %s: %d train + %d test synthetic '
      '%dx%d slices of the MNI152 template (not patient data, not for clinical '
      'claims).', builder.info.full_name, builder.data_dir, params.num_train,
      params.num_test, params.image_size, params.image_size)
  start = time.time()
  builder.download_and_prepare(
      file_format='array_record',
      # No GCS look-up: this dataset is generated locally, offline.
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  logging.info('Prepared %s in %.1f s.', builder.info.full_name,
               time.time() - start)
  return builder
