"""Tests of the TF-free folder builders on small fake data in each layout."""

import csv
import io
import os
import tempfile

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom import uid as pydicom_uid
import pytest

from medjax import config_lib
from medjax.data import phantom
from medjax.data import pipeline
from medjax.data.builders import arrays
from medjax.data.builders import brain_tumor_mri
from medjax.data.builders import chexpert
from medjax.data.builders import dicom_folder
from medjax.data.builders import folders
from medjax.data.builders import mni_brain_phantom
from medjax.data.builders import registry

_S = 32


# ---------------------------------------------------------------------------
# Fake files.


def _gray(h, w, value=None, seed=0):
  if value is not None:
    return np.full((h, w), value, np.uint8)
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (h, w), dtype=np.uint8)


def _save(path, array, fmt=None, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, format=fmt, **kwargs)


def _jpeg_bytes(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, 'JPEG', quality=95)
  return buf.getvalue()


def _write(path, data: bytes):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


def _broken_files(folder):
  """The broken files every layout gets: returns {name: reason}."""
  good = _jpeg_bytes(_gray(64, 64, seed=9))
  _write(os.path.join(folder, 'truncated.jpg'), good[:len(good) // 3])
  _write(os.path.join(folder, 'zero.jpg'), b'')
  _write(os.path.join(folder, 'text.png'), b'this is not a png\n')
  _write(os.path.join(folder, 'notes.txt'), b'not an image')
  _write(os.path.join(folder, '.DS_Store'), b'\0\1')
  return {'truncated.jpg': 'truncated', 'zero.jpg': 'empty_file',
          'text.png': 'not_an_image', 'notes.txt': 'not_image_extension',
          '.DS_Store': 'hidden_file'}


def _all(source):
  return [source[i] for i in range(len(source))]


def _skipped(report, split):
  return report['splits'][split]['skipped']


# ---------------------------------------------------------------------------
# brain_tumor_mri.


@pytest.fixture(scope='module')
def brain_root(tmp_path_factory):
  root = tmp_path_factory.mktemp('brain') / 'archive'  # One nesting level.
  for split, folder, per_class in (('train', 'Training', 3),
                                   ('test', 'Testing', 2)):
    for c, name in enumerate(brain_tumor_mri.CLASSES):
      d = root / folder / name
      for i in range(per_class):
        _save(str(d / f'{split}_{name}_{i}.jpg'),
              _gray(64 + 16 * i, 64, seed=10 * c + i + 5 * (split == 'test')),
              quality=95)
  training = root / 'Training'
  # A byte-identical copy across splits: reported, kept.
  _write(str(root / 'Testing' / 'glioma' / 'copy.jpg'),
         (training / 'glioma' / 'train_glioma_0.jpg').read_bytes())
  # Known content for the normalisation rule (all in class glioma).
  _save(str(training / 'glioma' / 'const.png'), _gray(64, 64, value=100))
  _save(str(training / 'glioma' / 'wide.png'), _gray(16, 32, value=255))
  rgb_gray = np.repeat(_gray(48, 48, value=77)[..., None], 3, axis=-1)
  _save(str(training / 'meningioma' / 'rgb_gray.jpg'), rgb_gray, quality=95)
  red = np.zeros((40, 40, 3), np.uint8)
  red[..., 0] = 255
  _save(str(training / 'pituitary' / 'red.png'), red)
  broken = _broken_files(str(training / 'notumor'))
  _write(str(training / 'stray.jpg'), _jpeg_bytes(_gray(8, 8)))
  _write(str(root / 'README.txt'), b'downloaded from kaggle')
  return str(root.parent), broken


@pytest.fixture(scope='module')
def brain(brain_root, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds_brain'))
  builder = registry.prepare('brain_tumor_mri', data_dir, brain_root[0],
                             image_size=_S, channels=1, limit=None)
  return builder, data_dir


def test_brain_counts_shapes_labels(brain):
  builder, _ = brain
  assert builder.info.full_name == 'brain_tumor_mri/s32_c1/1.0.0'
  assert tuple(builder.info.features['label'].names) == phantom.CLASSES
  train = _all(builder.as_data_source('train'))
  test = _all(builder.as_data_source('test'))
  assert len(train) == 4 * 3 + 4 and len(test) == 4 * 2 + 1
  for record in train + test:
    assert record['image'].dtype == np.uint8
    assert record['image'].shape == (_S, _S, 1)
  ids = [r['id'].decode() for r in train]
  assert len(set(ids)) == len(ids)
  assert all(i.startswith('Training/') for i in ids)
  counts = np.bincount([r['label'] for r in test], minlength=4)
  assert counts.tolist() == [3, 2, 2, 2]
  by_id = {r['id'].decode(): r for r in train}
  assert by_id['Training/glioma/train_glioma_2.jpg']['orig_height'] == 96
  assert by_id['Training/glioma/train_glioma_2.jpg']['orig_width'] == 64


def test_brain_normalisation_rule(brain):
  builder, _ = brain
  by_id = {r['id'].decode(): r for r in _all(builder.as_data_source('train'))}
  const = by_id['Training/glioma/const.png']
  assert (const['image'] == 100).all()  # BOX 64 -> 32 keeps a flat image.
  assert const['preprocess'].decode() == 'L; box 64->32'
  wide = by_id['Training/glioma/wide.png']['image'][..., 0]
  # 16x32 padded to 32x32 (8 black rows above and below), no resize.
  assert (wide[:8] == 0).all() and (wide[-8:] == 0).all()
  assert (wide[8:24] == 255).all()
  gray = by_id['Training/meningioma/rgb_gray.jpg']
  assert gray['orig_channels'] == 3
  assert np.abs(gray['image'].astype(int) - 77).max() <= 2
  assert gray['preprocess'].decode().startswith('RGB(gray)->L')
  red = by_id['Training/pituitary/red.png']
  assert (red['image'] == 76).all()  # Luma of pure red: 0.299 * 255.
  assert red['preprocess'].decode().startswith('RGB->L')


def test_brain_report(brain, brain_root):
  builder, _ = brain
  report = registry.read_report(builder)
  train = report['splits']['train']
  expected = {}
  for reason in brain_root[1].values():
    expected[reason] = expected.get(reason, 0) + 1
  expected['outside_class_folder'] = 1
  assert _skipped(report, 'train') == expected
  assert 'Training/notumor/truncated.jpg' in train['skipped_paths'][
      'truncated']
  assert train['read'] == 16
  assert train['files'] == train['read'] + train['skipped_total']
  assert train['labels'] == {'glioma': 5, 'meningioma': 4, 'notumor': 3,
                             'pituitary': 4}
  assert train['conversions']['RGB(gray)->L'] == 1
  assert _skipped(report, 'test') == {}
  assert report['splits'][folders.UNASSIGNED]['skipped_paths'] == {
      'outside_split_folder': ['README.txt']}
  assert report['splits']['test']['read'] == 9
  assert report['manual_dir'] == brain_root[0]
  assert report['duplicates']['group_paths'] == [[
      'test:Testing/glioma/copy.jpg',
      'train:Training/glioma/train_glioma_0.jpg']]
  assert report['duplicates']['groups_across_splits'] == 1


def test_brain_limit_channels_and_idempotence(brain, brain_root):
  _, data_dir = brain
  small = registry.prepare('brain_tumor_mri', data_dir, brain_root[0],
                           image_size=_S, channels=3, limit=5)
  assert small.info.full_name == 'brain_tumor_mri/s32_c3_n5/1.0.0'
  train = _all(small.as_data_source('train'))
  assert len(train) == 5 and len(small.as_data_source('test')) == 5
  for record in train:
    image = record['image']
    assert image.shape == (_S, _S, 3)
    if record['id'].decode() != 'Training/pituitary/red.png':
      assert (image[..., 0] == image[..., 2]).all()  # Gray repeated.
  report = registry.read_report(small)['splits']['train']
  assert report['read'] == 5
  assert report['files'] == (report['read'] + report['skipped_total']
                             + report['not_attempted_limit'])
  # The same subset again: deterministic.
  again = registry.prepare('brain_tumor_mri', data_dir + '_2', brain_root[0],
                           image_size=_S, channels=3, limit=5)
  assert ({r['id'] for r in train}
          == {r['id'] for r in _all(again.as_data_source('train'))})
  # Preparing again only reads the metadata.
  stamp = os.path.getmtime(os.path.join(small.data_dir,
                                        folders.REPORT_FILENAME))
  same = registry.prepare('brain_tumor_mri', data_dir, brain_root[0],
                          image_size=_S, channels=3, limit=5)
  assert same.is_prepared()
  assert os.path.getmtime(os.path.join(
      same.data_dir, folders.REPORT_FILENAME)) == stamp


def test_missing_empty_or_wrong_folder_names_the_layout(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(FileNotFoundError, match='does not exist') as error:
    registry.prepare('brain_tumor_mri', data_dir, str(tmp_path / 'nope'),
                     _S, 1, None)
  assert 'Training/' in str(error.value) and 'glioma/' in str(error.value)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='is empty') as error:
    registry.prepare('brain_tumor_mri', data_dir, str(tmp_path / 'empty'),
                     _S, 1, None)
  assert 'Testing/' in str(error.value)
  (tmp_path / 'wrong' / 'images').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='Training/ and Testing/'):
    registry.prepare('brain_tumor_mri', data_dir, str(tmp_path / 'wrong'),
                     _S, 1, None)
  (tmp_path / 'cx' / 'other').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='train.csv') as error:
    registry.prepare('chexpert', data_dir, str(tmp_path / 'cx'), _S, 1, None)
  assert 'CheXpert-v1.0-small/' in str(error.value)
  for name in ('image_folder', 'dicom_folder'):
    with pytest.raises(FileNotFoundError, match='Expected layout'):
      registry.prepare(name, data_dir, str(tmp_path / 'empty'), _S, 1, None)
  assert not os.path.exists(os.path.join(data_dir, 'brain_tumor_mri',
                                         's32_c1', '1.0.0'))


# ---------------------------------------------------------------------------
# image_folder.


def _image_folder_files(root, classes=('benign', 'malignant'), per_class=6):
  for c, name in enumerate(classes):
    for i in range(per_class):
      kind = i % 4
      path = os.path.join(root, name, f'{name}_{i:02d}')
      if kind == 0:  # RGB photo, not square.
        rgb = np.random.default_rng(c * 100 + i).integers(
            0, 256, (30, 50, 3), dtype=np.uint8)
        _save(path + '.jpg', rgb, quality=95)
      elif kind == 1:  # 16-bit grayscale PNG.
        _save(path + '.png', (np.arange(40 * 40).reshape(40, 40) * 40)
              .astype(np.uint16))
      elif kind == 2:
        _save(path + '.bmp', _gray(20, 20, seed=i))
      else:  # In a sub-folder.
        _save(os.path.join(root, name, 'sub', f'{i:02d}.tif'),
              _gray(70, 64, seed=i))


def test_image_folder_seeded_split(tmp_path):
  root = str(tmp_path / 'ISIC 2019')
  _image_folder_files(root, per_class=10)
  _broken_files(os.path.join(root, 'benign'))
  builder = registry.prepare('image_folder', str(tmp_path / 'tfds'), root,
                             image_size=_S, channels=3, limit=None,
                             test_fraction=0.3)
  assert builder.info.full_name == (
      'image_folder/ISIC-2019_s32_c3_test_fraction0.3/1.0.0')
  assert builder.info.features['label'].names == ['benign', 'malignant']
  train = _all(builder.as_data_source('train'))
  test = _all(builder.as_data_source('test'))
  # 20 good images; the broken candidates of `benign` are assigned to a
  # split too, and skipped there.
  report = registry.read_report(builder)
  train_ids = {r['id'].decode() for r in train}
  test_ids = {r['id'].decode() for r in test}
  assert not train_ids & test_ids
  assert len(train_ids | test_ids) == 20
  assert (report['splits']['train']['read']
          + report['splits']['test']['read']) == 20
  skipped = {}
  for split in ('train', 'test', folders.UNASSIGNED):
    for reason, n in report['splits'].get(split, {'skipped': {}})[
        'skipped'].items():
      skipped[reason] = skipped.get(reason, 0) + n
  assert skipped == {'truncated': 1, 'empty_file': 1, 'not_an_image': 1,
                     'not_image_extension': 1, 'hidden_file': 1}
  assert report['splits'][folders.UNASSIGNED]['skipped'] == {
      'not_image_extension': 1, 'hidden_file': 1}
  for record in train + test:
    assert record['image'].shape == (_S, _S, 3)
  assert 'minmax' in ''.join(report['splits']['train']['conversions'])
  # Deterministic: the split is a function of the seed and the file names.
  again = registry.prepare('image_folder', str(tmp_path / 'tfds2'), root,
                           image_size=_S, channels=3, limit=None,
                           test_fraction=0.3)
  assert {r['id'].decode() for r in _all(again.as_data_source('test'))} == (
      test_ids)


def test_image_folder_split_folders_and_tags(tmp_path):
  root = str(tmp_path / 'ct')
  _image_folder_files(os.path.join(root, 'train'), ('covid', 'normal'), 4)
  _image_folder_files(os.path.join(root, 'test'), ('covid', 'normal',
                                                   'other'), 2)
  data_dir = str(tmp_path / 'tfds')
  a = registry.prepare('image_folder', data_dir, root, image_size=_S,
                       channels=1, limit=None, tag='ct_a')
  b = registry.prepare('image_folder', data_dir, root, image_size=_S,
                       channels=1, limit=None, tag='ct_b')
  assert a.info.full_name != b.info.full_name
  assert a.info.features['label'].names == ['covid', 'normal', 'other']
  assert len(a.as_data_source('train')) == 8
  assert registry.read_report(a)['splits']['test']['files'] == 6
  assert len(a.as_data_source('test')) == 6
  assert {r['label'] for r in _all(a.as_data_source('test'))} == {0, 1, 2}
  assert all(r['image'].shape == (_S, _S, 1)
             for r in _all(a.as_data_source('train')))
  # medjax's pipeline reads it unchanged, through tfds.builder.
  dataset = config_lib.base_config().dataset
  dataset.name = a.info.full_name.rsplit('/', 1)[0]
  dataset.data_dir = data_dir
  dataset.image_size = 16
  data = pipeline.load(dataset, split='test')
  assert data.images.shape == (6, 16, 16, 1)
  assert data.label_names == ('covid', 'normal', 'other')
  assert sorted(data.labels.tolist()) == [0, 0, 1, 1, 2, 2]


# ---------------------------------------------------------------------------
# dicom_folder.


def _dicom(path, patient, series, instance, pixels, *, slope=1.0,
           intercept=0.0, window=None, photometric='MONOCHROME2'):
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = pydicom_uid.CTImageStorage
  meta.MediaStorageSOPInstanceUID = pydicom_uid.generate_uid()
  meta.TransferSyntaxUID = pydicom_uid.ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.PatientID = patient
  ds.StudyInstanceUID = series + '.0'
  ds.SeriesInstanceUID = series
  ds.Modality = 'CT'
  ds.InstanceNumber = instance
  ds.Rows, ds.Columns = pixels.shape
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated = ds.BitsStored = 16
  ds.HighBit = 15
  ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
  ds.RescaleSlope = slope
  ds.RescaleIntercept = intercept
  if window is not None:
    ds.WindowCenter, ds.WindowWidth = window
  ds.PixelData = pixels.tobytes()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope='module')
def dicom_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('dicom') / 'CPTAC-GBM')
  # Stored values v, HU = 2 v - 1024: left half air (-1000 HU), right half
  # 40 HU; window c40 w400 maps them to 0 and 128.
  stored = np.empty((24, 32), np.int16)
  stored[:, :16] = 12
  stored[:, 16:] = 532
  patients = {'P1': 'tumor', 'P2': 'tumor', 'P3': 'control'}
  for p, (patient, group) in enumerate(sorted(patients.items())):
    series = f'1.2.826.0.1.3680043.8.498.{p + 1}'
    for i in range(4):
      _dicom(os.path.join(root, group, patient, 'series1', f'1-{i:03d}.dcm'),
             patient, series, i + 1, stored, slope=2.0, intercept=-1024.0,
             window=(40, 400),
             photometric='MONOCHROME1' if patient == 'P3' else 'MONOCHROME2')
  # Unsigned 12-bit-range slices without a window (percentile scaling).
  ramp = (np.arange(24 * 32).reshape(24, 32) * 5).astype(np.uint16)
  for i in range(3):
    _dicom(os.path.join(root, 'control', 'P4', 's', f'{i}.dcm'), 'P4',
           '1.2.826.0.1.3680043.8.498.4', i + 1, ramp)
  tumor = os.path.join(root, 'tumor', 'P1', 'series1')
  good = open(os.path.join(tumor, '1-000.dcm'), 'rb').read()
  _write(os.path.join(tumor, 'cut.dcm'), good[:-400])
  _write(os.path.join(tumor, 'empty.dcm'), b'')
  _write(os.path.join(tumor, 'notes.txt'), b'not dicom')
  sr = Dataset()  # A DICOM object without pixels (e.g. a report).
  sr.file_meta = FileMetaDataset()
  sr.file_meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.88.11'
  sr.file_meta.MediaStorageSOPInstanceUID = pydicom_uid.generate_uid()
  sr.file_meta.TransferSyntaxUID = pydicom_uid.ExplicitVRLittleEndian
  sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
  sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID
  sr.PatientID = 'P1'
  sr.save_as(os.path.join(tumor, 'report.dcm'), enforce_file_format=True)
  return root


@pytest.fixture(scope='module')
def dicom(dicom_root, tmp_path_factory):
  return registry.prepare(
      'dicom_folder', str(tmp_path_factory.mktemp('tfds_dicom')), dicom_root,
      image_size=_S, channels=1, limit=None, label_level=0,
      test_fraction=0.25, seed=1)


def test_dicom_split_by_patient(dicom):
  assert dicom.info.full_name.startswith('dicom_folder/CPTAC-GBM_s32_c1_')
  assert dicom.info.features['label'].names == ['control', 'tumor']
  train = _all(dicom.as_data_source('train'))
  test = _all(dicom.as_data_source('test'))
  patients = {s: {r['patient_id'].decode() for r in records}
              for s, records in (('train', train), ('test', test))}
  assert not patients['train'] & patients['test']
  assert patients['train'] | patients['test'] == {'P1', 'P2', 'P3', 'P4'}
  assert len(patients['test']) == 1  # round(0.25 x 4 patients).
  # cut.dcm (a truncated copy of a P1 slice) fails to decode.
  expected = {'P1': 4, 'P2': 4, 'P3': 4, 'P4': 3}
  for records in (train, test):
    for r in records:
      patient = r['patient_id'].decode()
      assert r['label'] == (1 if patient in ('P1', 'P2') else 0)
      assert r['image'].shape == (_S, _S, 1) and r['image'].dtype == np.uint8
      assert r['series_uid'].decode().startswith('1.2.826.0.1.3680043')
      assert (r['orig_height'], r['orig_width']) == (24, 32)
  counts = {}
  for r in train + test:
    counts[r['patient_id'].decode()] = counts.get(
        r['patient_id'].decode(), 0) + 1
  report = registry.read_report(dicom)
  assert report['splits'][folders.UNASSIGNED]['skipped'] == {
      'empty_file': 1, 'no_pixel_data': 1, 'not_dicom': 1}
  decode_skips = {}
  for split in ('train', 'test'):
    for reason, n in report['splits'][split]['skipped'].items():
      decode_skips[reason] = decode_skips.get(reason, 0) + n
    assert report['splits'][split]['patient_ids'] == sorted(patients[split])
  assert decode_skips == {'pixel_decode_error': 1}
  assert counts == expected


def test_dicom_window_rescale_and_monochrome1(dicom):
  records = (_all(dicom.as_data_source('train'))
             + _all(dicom.as_data_source('test')))
  for r in records:
    patient = r['patient_id'].decode()
    image = r['image'][..., 0].astype(int)
    rows = image[4:28]  # Padded 24x32 -> 32x32: 4 black rows each side.
    assert (image[:4] == 0).all() and (image[28:] == 0).all()
    if patient == 'P4':  # Percentile scaling of a ramp: dark to bright.
      assert rows[0, 0] == 0 and rows[-1, -1] == 255
      assert 'percentile' in r['preprocess'].decode()
    elif patient == 'P3':  # MONOCHROME1: inverted after the window.
      assert (rows[:, :16] == 255).all() and (rows[:, 16:] == 127).all()
      assert 'MONOCHROME1 inverted' in r['preprocess'].decode()
    else:
      assert (rows[:, :16] == 0).all() and (rows[:, 16:] == 128).all()
      assert 'window(file) c40 w400' in r['preprocess'].decode()


def test_dicom_explicit_window_and_limit(dicom_root, tmp_path):
  builder = registry.prepare(
      'dicom_folder', str(tmp_path), dicom_root, image_size=16, channels=3,
      limit=2, window=(-1000, 2), scaling='window', test_fraction=0.5)
  assert 'label' not in builder.info.features
  for split in ('train', 'test'):
    records = _all(builder.as_data_source(split))
    assert len(records) == 2
    for r in records:
      assert r['image'].shape == (16, 16, 3)
      assert 'window(option) c-1000 w2' in r['preprocess'].decode()
  report = registry.read_report(builder)
  assert report['options']['window'] == [-1000.0, 2.0]
  assert report['splits']['train']['patients'] == 2


def test_dicom_labels_from_csv(dicom_root, tmp_path):
  table = tmp_path / 'labels.csv'
  table.write_text('PatientID,label\nP1,idh_wt\nP2,idh_mut\nP3,idh_wt\n')
  builder = registry.prepare(
      'dicom_folder', str(tmp_path / 'tfds'), dicom_root, image_size=_S,
      channels=1, limit=None, labels_csv=str(table), scaling='percentile')
  names = builder.info.features['label'].names
  assert names == ['idh_mut', 'idh_wt']
  records = (_all(builder.as_data_source('train'))
             + _all(builder.as_data_source('test')))
  for r in records:
    patient = r['patient_id'].decode()
    assert names[r['label']] == ('idh_mut' if patient == 'P2' else 'idh_wt')
    assert 'percentile' in r['preprocess'].decode()
  assert {r['patient_id'] for r in records} == {b'P1', b'P2', b'P3'}
  report = registry.read_report(builder)
  # P4's 3 slices have no label: skipped before the split, and said so.
  assert report['splits'][folders.UNASSIGNED]['skipped']['no_label'] == 3
  # Reading the prepared dataset again needs no manual folder.
  again = registry.prepare('dicom_folder', str(tmp_path / 'tfds'), None,
                           image_size=_S, channels=1, limit=None,
                           tag='CPTAC-GBM', labels_csv=str(table),
                           scaling='percentile')
  assert again.info.full_name == builder.info.full_name
  assert again.info.features['label'].names == names


# ---------------------------------------------------------------------------
# chexpert.


_ROWS = (  # Path suffix, view, labels of (No Finding, Cardiomegaly, Edema).
    ('train/patient00001/study1/view1_frontal.jpg', 'Frontal', ('1.0', '', '')),
    ('train/patient00001/study1/view2_lateral.jpg', 'Lateral',
     ('', '-1.0', '1.0')),
    ('train/patient00002/study1/view1_frontal.jpg', 'Frontal',
     ('', '-1.0', '0.0')),
    ('train/patient00003/study1/view1_frontal.jpg', 'Frontal',
     ('', '1.0', '-1.0')),
    ('train/patient00004/study1/view1_frontal.jpg', 'Frontal', ('', '', '')),
    ('train/patient00005/study1/view1_frontal.jpg', 'Frontal', ('', '', '')),
)


@pytest.fixture(scope='module')
def chexpert_root(tmp_path_factory):
  manual = tmp_path_factory.mktemp('chexpert')
  base = manual / 'CheXpert-v1.0-small'
  header = ['Path', 'Sex', 'Age', 'Frontal/Lateral', 'AP/PA',
            *chexpert.OBSERVATIONS]
  rows = []
  for i, (suffix, view, (nf, cm, ed)) in enumerate(_ROWS):
    labels = {o: '' for o in chexpert.OBSERVATIONS}
    labels.update({'No Finding': nf, 'Cardiomegaly': cm, 'Edema': ed})
    rows.append({'Path': f'CheXpert-v1.0-small/{suffix}', 'Sex': 'Female',
                 'Age': str(50 + i), 'Frontal/Lateral': view,
                 'AP/PA': 'AP' if view == 'Frontal' else '', **labels})
    if i == 4:  # Listed in the CSV, missing on disk.
      continue
    path = str(base / suffix)
    if i == 5:
      data = _jpeg_bytes(_gray(64, 48, seed=i))
      _write(path, data[:len(data) // 2])
    else:
      _save(path, _gray(64, 48, seed=i), quality=95)
  valid = []
  for i in range(2):
    suffix = f'valid/patient6454{i}/study1/view1_frontal.jpg'
    _save(str(base / suffix), _gray(48, 64, seed=20 + i), quality=95)
    labels = {o: '0.0' for o in chexpert.OBSERVATIONS}
    labels['Cardiomegaly'] = '1.0' if i else '0.0'
    valid.append({'Path': f'CheXpert-v1.0-small/{suffix}', 'Sex': 'Male',
                  'Age': '70', 'Frontal/Lateral': 'Frontal', 'AP/PA': 'PA',
                  **labels})
  for name, table in (('train.csv', rows), ('valid.csv', valid)):
    with open(base / name, 'w', newline='') as f:
      writer = csv.DictWriter(f, header)
      writer.writeheader()
      writer.writerows(table)
  return str(manual)


def _by_suffix(builder, split='train'):
  return {r['id'].decode().split('/', 1)[1]: r
          for r in _all(builder.as_data_source(split))}


def test_chexpert_ignore_policy_and_target(chexpert_root, tmp_path):
  assert registry.tfds_name('chexpert') == 'medjax_chexpert'
  builder = registry.prepare('chexpert', str(tmp_path), chexpert_root,
                             image_size=_S, channels=1, limit=None,
                             target='cardiomegaly')
  assert builder.info.full_name == (
      'medjax_chexpert/s32_c1_targetcardiomegaly/1.0.0')
  assert builder.info.features['label'].names == ['not_cardiomegaly',
                                                  'cardiomegaly']
  train = _by_suffix(builder)
  assert len(train) == 4  # 6 rows: one file missing, one truncated.
  cm = chexpert.OBSERVATIONS.index('Cardiomegaly')
  ed = chexpert.OBSERVATIONS.index('Edema')
  lateral = train['train/patient00001/study1/view2_lateral.jpg']
  assert lateral['labels'].dtype == np.float32
  assert lateral['labels'].shape == (14,)
  assert lateral['labels'][cm] == 0 and lateral['label_mask'][cm] == 0
  assert lateral['labels'][ed] == 1 and lateral['label_mask'][ed] == 1
  assert lateral['label'] == 0
  assert lateral['view'] == b'Lateral' and lateral['age'] == 51
  positive = train['train/patient00003/study1/view1_frontal.jpg']
  assert positive['label'] == 1
  assert positive['labels'][ed] == 0 and positive['label_mask'][ed] == 0
  first = train['train/patient00001/study1/view1_frontal.jpg']
  assert first['label_mask'].all()  # Blanks are negatives, not ignored.
  assert first['labels'].tolist() == [1.0] + [0.0] * 13
  assert len(builder.as_data_source('validation')) == 2
  report = registry.read_report(builder)['splits']['train']
  assert report['skipped'] == {'missing_file': 1, 'truncated': 1}
  assert report['uncertain_counts']['Cardiomegaly'] == 2
  assert report['positive_counts']['Edema'] == 1


@pytest.mark.parametrize('policy,value', [('ones', 1.0), ('zeros', 0.0)])
def test_chexpert_binary_policies(chexpert_root, tmp_path, policy, value):
  builder = registry.prepare('chexpert', str(tmp_path), chexpert_root,
                             image_size=_S, channels=1, limit=None,
                             uncertain=policy, frontal_only=True)
  assert 'label' not in builder.info.features
  train = _by_suffix(builder)
  assert 'train/patient00001/study1/view2_lateral.jpg' not in train
  cm = chexpert.OBSERVATIONS.index('Cardiomegaly')
  uncertain = train['train/patient00002/study1/view1_frontal.jpg']
  assert uncertain['labels'][cm] == value
  assert uncertain['label_mask'].all()
  report = registry.read_report(builder)['splits']['train']
  assert report['skipped']['not_frontal'] == 1


# ---------------------------------------------------------------------------
# Registry and helpers.


def test_registry_names_and_options():
  assert registry.NAMES == ('brain_tumor_mri', 'image_folder',
                            'dicom_folder', 'chexpert')
  assert registry.default_options('brain_tumor_mri') == {}
  assert registry.default_options('chexpert') == {
      'uncertain': 'ignore', 'target': None, 'frontal_only': False}
  assert set(registry.default_options('dicom_folder')) == {
      'tag', 'scaling', 'window', 'percentiles', 'label_level',
      'labels_csv', 'test_fraction', 'seed'}
  with pytest.raises(ValueError, match='unknown dataset'):
    registry.prepare('nope', None, None, 32, 1, None)
  with pytest.raises(TypeError, match='unknown option'):
    registry.prepare('chexpert', None, None, 32, 1, None, policy='ones')
  with pytest.raises(ValueError, match='channels'):
    registry.prepare('brain_tumor_mri', None, None, 32, 2, None)


def test_dicom_window_function():
  x = np.array([-1000.0, -160.5, 39.5, 239.5, 1000.0])
  # pylint: disable-next=protected-access
  out = dicom_folder._window_to_uint8(x, 40.0, 400.0)
  assert out.tolist() == [0, 0, 128, 255, 255]


def test_dicom_percentiles_match_numpy():
  rng = np.random.default_rng(0)
  for dtype in (np.int16, np.uint16):
    pixels = rng.normal(900, 400, (37, 41)).clip(0, 4095).astype(dtype)
    for q in ((0.5, 99.5), (0.0, 100.0), (2.0, 98.0)):
      # pylint: disable-next=protected-access
      got = dicom_folder._percentiles(pixels, q)
      np.testing.assert_allclose(got, np.percentile(pixels, q), rtol=0,
                                 atol=1e-9)


def test_dcgan_config_trains_on_brain_tumor_mri_by_name(brain_root, tmp_path):
  # The config switch: dataset.name picks the builder; it is prepared from
  # dataset.source.manual_dir on first use.
  from medjax import train  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(str(tmp_path / 'tfds'), num_train_steps=2,
                       batch_size=4, **{
                           'dataset.name': 'brain_tumor_mri',
                           'dataset.source.manual_dir': brain_root[0],
                           'dataset.source.stored_size': 32})
  state = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 2
  data = pipeline.load(config.dataset)
  assert data.label_names == brain_tumor_mri.CLASSES


def test_dicom_builder_without_pydicom_says_what_to_install(
    dicom_root, tmp_path, monkeypatch):
  """medjax imports without pydicom (GPU hosts); only building needs it."""
  from medjax.data.builders import dicom_folder  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(dicom_folder, 'pydicom', None)
  with pytest.raises(ImportError, match='pip install pydicom'):
    registry.prepare('dicom_folder', str(tmp_path / 'tfds'), dicom_root,
                     image_size=_S, channels=1, limit=None, label_level=0,
                     test_fraction=0.25, seed=1)


@pytest.mark.parametrize('make', ['arrays', 'phantom'])
def test_preparing_a_dataset_leaves_no_temporary_folder(tmp_path, monkeypatch,
                                                        make):
  # TFDS's DatasetInfo.initialize_from_bucket makes a mkdtemp folder for every
  # builder of an unprepared dataset and never removes it.
  scratch = tmp_path / 'tmp'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  if make == 'arrays':
    arrays.write('leftover_check', str(tmp_path / 'tfds'),
                 {'train': (np.zeros((2, 4, 4, 1), np.uint8),
                            np.zeros((2,), np.int32))}, (), 'check', {})
  else:
    mni_brain_phantom.prepare(
        str(tmp_path / 'tfds'),
        phantom.PhantomParams(image_size=16, num_train=2, num_test=1))
  assert not list(scratch.iterdir())
  assert tempfile.tempdir == str(scratch)
