"""TF-free TFDS builder of CheXpert (Irvin et al., 2019) from its manual layout.

TFDS's own `chexpert` builder encodes images with TensorFlow; this one reads
the standard download (`CheXpert-v1.0-small/train.csv`, `valid.csv` and the
JPEGs they list) into `train` and `validation` with the 14 observations as a
multi-label vector, an uncertainty policy chosen in the config, and
optionally a binary `label` for one target observation. The TFDS name is
`medjax_chexpert` (`chexpert` is taken by TFDS's builder).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

from medjax.data.builders import folders

NAME = 'medjax_chexpert'
OBSERVATIONS = (
    'No Finding', 'Enlarged Cardiomediastinum', 'Cardiomegaly',
    'Lung Opacity', 'Lung Lesion', 'Edema', 'Consolidation', 'Pneumonia',
    'Atelectasis', 'Pneumothorax', 'Pleural Effusion', 'Pleural Other',
    'Fracture', 'Support Devices')
# Uncertain (-1) label -> (label, mask).
POLICIES = {'ones': (1.0, 1.0), 'zeros': (0.0, 1.0), 'ignore': (0.0, 0.0)}
_FOLDERS = ('CheXpert-v1.0-small', 'CheXpert-v1.0')
_SPLIT_CSVS = (('train', 'train.csv'), ('validation', 'valid.csv'))
_VALUES = {'1.0': 1.0, '1': 1.0, '0.0': 0.0, '0': 0.0, '-1.0': -1.0,
           '-1': -1.0, '': None}

LAYOUT = """\
<manual_dir>/
  CheXpert-v1.0-small/          (or CheXpert-v1.0/ for the full resolution)
    train.csv                   Path,Sex,Age,Frontal/Lateral,AP/PA,
    valid.csv                     No Finding,...,Support Devices
    train/patient00001/study1/view1_frontal.jpg ...
    valid/patient64541/study1/view1_frontal.jpg ...
(`Path` in the CSVs is relative to <manual_dir>, e.g.
 CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg)"""

_DESCRIPTION = """\
CheXpert (Irvin et al., AAAI 2019): chest radiographs of Stanford Hospital \
patients with 14 observations extracted from the radiology reports by an \
automatic labeler as positive (1), negative (0), uncertain (-1) or not \
mentioned (blank). Splits: `train` (train.csv) and `validation` (valid.csv, \
radiologist-labelled, no uncertain labels); the two sets have no patient in \
common. `labels` holds the 14 observations in OBSERVATIONS order after the \
uncertainty policy; `label_mask` is 0 where a label is to be ignored \
(policy 'ignore': the uncertain ones) and 1 elsewhere. Blank is negative \
(0, mask 1)."""

_CITATION = """\
@inproceedings{irvin2019chexpert,
  title={CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels
         and Expert Comparison},
  author={Irvin, Jeremy and Rajpurkar, Pranav and Ko, Michael and Yu, Yifan
          and Ciurea-Ilcus, Silviana and Chute, Chris and Marklund, Henrik
          and Haghgoo, Behzad and Ball, Robyn and Shpanskaya, Katie and
          others},
  booktitle={Proceedings of the AAAI Conference on Artificial Intelligence},
  volume={33},
  pages={590--597},
  year={2019}
}
"""


def slug(observation: str) -> str:
  """'Pleural Effusion' -> 'pleural_effusion'."""
  return re.sub(r'\W+', '_', observation.strip().lower()).strip('_')


def target_observation(target: str) -> str:
  """The observation named by `target` ('Cardiomegaly' or 'cardiomegaly')."""
  by_slug = {slug(o): o for o in OBSERVATIONS}
  if slug(target) not in by_slug:
    raise ValueError(f'target {target!r} is not one of {OBSERVATIONS}')
  return by_slug[slug(target)]


@dataclasses.dataclass
class ChexpertConfig(folders.FolderConfig):
  """Options of CheXpert.

  Attributes:
    uncertain: policy for uncertain (-1) labels: 'ones' (U-Ones: positive),
      'zeros' (U-Zeros: negative) or 'ignore' (U-Ignore: 0 with mask 0).
    target: an observation (name or slug) whose 0/1 value is stored as the
      single-label `label`; None for multi-label only.
    frontal_only: keep frontal views only (laterals are counted as skipped).
  """
  uncertain: str = 'ignore'
  target: str | None = None
  frontal_only: bool = False


_DEFAULT_CONFIG = folders.make_config(
    ChexpertConfig, prefix=None, image_size=256, channels=1, limit=None)


def config_for(image_size: int, channels: int, limit: int | None,
               uncertain: str = 'ignore', target: str | None = None,
               frontal_only: bool = False) -> ChexpertConfig:
  """The config of a variant, named like 's256_c1_targetcardiomegaly'.

  Args:
    image_size: side of the stored square images.
    channels: 1 or 3.
    limit: examples per split cap, or None.
    uncertain: 'ones', 'zeros' or 'ignore' (see `ChexpertConfig`).
    target: observation for `label`, or None.
    frontal_only: keep frontal views only.

  Returns:
    The config.
  """
  if uncertain not in POLICIES:
    raise ValueError(f'uncertain must be one of {sorted(POLICIES)}, got '
                     f'{uncertain!r}')
  if target is not None:
    target = slug(target_observation(target))
  return folders.make_config(
      ChexpertConfig, prefix=None, image_size=image_size, channels=channels,
      limit=limit, default=_DEFAULT_CONFIG, uncertain=uncertain,
      target=target, frontal_only=bool(frontal_only))


def _find_root(manual_dir: str) -> str | None:
  """The folder holding train.csv and valid.csv."""
  for candidate in (*(os.path.join(manual_dir, f) for f in _FOLDERS),
                    manual_dir):
    if all(os.path.isfile(os.path.join(candidate, name))
           for _, name in _SPLIT_CSVS):
      return candidate
  return None


class MedjaxChexpert(folders.FolderBuilder):
  """CheXpert from its manual layout, without TensorFlow."""

  name = NAME
  LAYOUT = LAYOUT
  DESCRIPTION = _DESCRIPTION
  HOMEPAGE = 'https://stanfordmlgroup.github.io/competitions/chexpert/'
  CITATION = _CITATION
  BUILDER_CONFIGS = [_DEFAULT_CONFIG]
  DEFAULT_CONFIG_NAME = _DEFAULT_CONFIG.name

  def _extra_features(self):
    features = {
        'labels': tfds.features.Tensor(shape=(len(OBSERVATIONS),),
                                       dtype=np.float32),
        'label_mask': tfds.features.Tensor(shape=(len(OBSERVATIONS),),
                                           dtype=np.float32),
        'view': tfds.features.Text(),  # 'Frontal' or 'Lateral'.
        'ap_pa': tfds.features.Text(),  # 'AP', 'PA', 'LL', ... or ''.
        'sex': tfds.features.Text(),
        'age': tfds.features.Scalar(np.int32),  # -1 when unknown.
    }
    target = self.builder_config.target
    if target is not None:
      features['label'] = tfds.features.ClassLabel(
          names=(f'not_{target}', target))
    return features

  def _scan(self, manual_dir: str) -> dict[str, list[folders.Item]]:
    c = self.builder_config
    root = _find_root(manual_dir)
    if root is None:
      raise self._layout_error(
          manual_dir, 'no folder with train.csv and valid.csv found (found: '
          f'{sorted(os.listdir(manual_dir))}).')
    uncertain = POLICIES[c.uncertain]
    target = (OBSERVATIONS.index(target_observation(c.target))
              if c.target is not None else None)
    interned = {}  # Few distinct label vectors: share them (big CSVs).
    splits = {}
    for split, csv_name in _SPLIT_CSVS:
      tally = self._report.split(split)
      csv_path = os.path.join(root, csv_name)
      with open(csv_path, newline='') as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [k for k in ('Path', *OBSERVATIONS) if k not in columns]
        if missing:
          raise self._layout_error(
              manual_dir, f'{csv_path} lacks columns {missing}.')
        items, seen = [], set()
        positives = np.zeros(len(OBSERVATIONS), np.int64)
        uncertains = np.zeros(len(OBSERVATIONS), np.int64)
        for row in reader:
          key = (row['Path'] or '').strip()
          try:
            if not key or key in seen:
              raise ValueError('empty or repeated Path')
            raw = [_VALUES[(row[o] or '').strip()] for o in OBSERVATIONS]
          except (KeyError, ValueError) as e:
            tally.skip('bad_csv_row', key or f'{csv_name}:{reader.line_num}',
                       str(e))
            continue
          seen.add(key)
          view = sys.intern((row.get('Frontal/Lateral') or '').strip())
          if c.frontal_only and view != 'Frontal':
            tally.skip('not_frontal', key)
            continue
          labels, mask = [], []
          for value in raw:
            label, keep = ((0.0, 1.0) if value is None else
                           uncertain if value < 0 else (value, 1.0))
            labels.append(label)
            mask.append(keep)
          positives += [v == 1.0 for v in raw]
          uncertains += [v == -1.0 for v in raw]
          labels = interned.setdefault(tuple(labels), tuple(labels))
          mask = interned.setdefault(tuple(mask), tuple(mask))
          parts = key.split('/')
          if parts[0].lower().startswith('chexpert'):
            parts = parts[1:]  # Paths start with the dataset folder's name.
          try:
            age = int(float(row.get('Age') or -1))
          except ValueError:
            age = -1
          items.append(folders.Item(
              key, os.path.join(root, *parts),
              None if target is None else int(labels[target] == 1.0),
              {'labels': labels, 'label_mask': mask, 'view': view,
               'ap_pa': sys.intern((row.get('AP/PA') or '').strip()),
               'sex': sys.intern((row.get('Sex') or '').strip()),
               'age': age}))
      tally.extra['positive_counts'] = dict(zip(OBSERVATIONS,
                                                positives.tolist()))
      tally.extra['uncertain_counts'] = dict(zip(OBSERVATIONS,
                                                 uncertains.tolist()))
      splits[split] = items
    self._report.notes['uncertain_policy'] = c.uncertain
    return splits


def prepare(data_dir: str | None, manual_dir: str | None, image_size: int,
            channels: int, limit: int | None, uncertain: str = 'ignore',
            target: str | None = None,
            frontal_only: bool = False) -> tfds.core.DatasetBuilder:
  """Prepares CheXpert (idempotent); see `folders.prepare`.

  Args:
    data_dir: TFDS data dir; None for TFDS's default.
    manual_dir: the folder holding CheXpert-v1.0-small/ (see `LAYOUT`).
    image_size: side of the stored square images.
    channels: 1 or 3.
    limit: examples per split cap, or None.
    uncertain: 'ones', 'zeros' or 'ignore'.
    target: observation stored as the binary `label`, or None.
    frontal_only: keep frontal views only.

  Returns:
    The prepared builder, e.g. `medjax_chexpert/s256_c1`.
  """
  return folders.prepare(
      MedjaxChexpert,
      config_for(image_size, channels, limit, uncertain, target,
                 frontal_only), data_dir, manual_dir)
