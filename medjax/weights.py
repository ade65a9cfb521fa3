r"""Pretrained weights: PyTorch checkpoints read without torch, Flax checkpoints.

  python -m medjax.weights convert --kind=vgg19 --src=vgg19-dcbb9e9d.pth \
    --out=weights/vgg19

reads a PyTorch state dict (`load_torch_state_dict`, no torch needed), maps it
onto a Flax module's params with the kind's converter and writes `DIR/
params.msgpack` (flax.serialization) plus `DIR/weights.json` (kind, source file
name, its sha256). `load(kind, path)` reads that directory back (or converts a
`.pth` file in memory).

Both PyTorch formats are read:
  * zip (torch >= 1.6): `<prefix>/data.pkl` pickled with persistent ids
    `('storage', storage_type, key, location, numel)`; the raw little-endian
    bytes of storage `key` are in `<prefix>/data/<key>`.
  * legacy (torch < 1.6): a stream of pickles -- magic number, protocol
    version 1001, sys info, the object (persistent ids `('storage',
    storage_type, key, location, numel, view_metadata)`), the list of storage
    keys -- then, for each key in that order, an 8-byte little-endian element
    count and the raw bytes.

Pickles are read with an unpickler that knows only the few globals a state
dict needs (tensor rebuild functions, storage types, OrderedDict) and refuses
every other global: a checkpoint is data and must never run code.

New kinds are added with `register(WeightsKind(...))` and a converter in the
model's module (see the registry at the end of this file).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import zipfile
from typing import Any, BinaryIO, Callable, Mapping

from absl import logging
import numpy as np

Params = Any

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

# Storage types -> numpy dtype of one element. bfloat16 is kept as its uint16
# bits until the tensor is rebuilt (numpy has no bfloat16).
_STORAGE_DTYPES = {
    'DoubleStorage': np.dtype('<f8'),
    'FloatStorage': np.dtype('<f4'),
    'HalfStorage': np.dtype('<f2'),
    'BFloat16Storage': np.dtype('<u2'),
    'LongStorage': np.dtype('<i8'),
    'IntStorage': np.dtype('<i4'),
    'ShortStorage': np.dtype('<i2'),
    'CharStorage': np.dtype('i1'),
    'ByteStorage': np.dtype('u1'),
    'BoolStorage': np.dtype('?'),
    'UntypedStorage': np.dtype('u1'),
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stand-in for a `torch.*Storage` class named in a pickle."""
  name: str

  @property
  def dtype(self) -> np.dtype:
    return _STORAGE_DTYPES[self.name]

  @property
  def bfloat16(self) -> bool:
    return self.name == 'BFloat16Storage'


@dataclasses.dataclass
class _Storage:
  """A loaded storage: a flat little-endian array of its elements."""
  data: np.ndarray
  bfloat16: bool


def _bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
  # A bfloat16 is the top half of a float32.
  return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(storage: _Storage, storage_offset: int, size, stride,
                    *unused) -> np.ndarray:
  """`torch._utils._rebuild_tensor(_v2)`: a strided view, copied."""
  if not isinstance(storage, _Storage):
    raise pickle.UnpicklingError(f'tensor built from {type(storage)}')
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride)
  offset = int(storage_offset)
  if len(size) != len(stride) or min(size + stride + (offset,),
                                     default=0) < 0:
    raise pickle.UnpicklingError(
        f'bad tensor geometry: size {size} stride {stride} offset {offset}')
  flat = storage.data
  if 0 in size:
    out = np.zeros(size, flat.dtype)
  else:
    # Bounds check before as_strided, which would otherwise read past the
    # buffer for a corrupt or hostile file.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
      raise pickle.UnpicklingError(
          f'tensor (size {size}, stride {stride}, offset {offset}) exceeds '
          f'its storage of {flat.size} elements')
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size,
        strides=tuple(s * flat.itemsize for s in stride), writeable=False)
    # Copy: the result must not alias a storage other tensors share.
    out = np.array(view, copy=True)
  if storage.bfloat16:
    out = _bf16_bits_to_f32(out)
  return out


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None,
                       *unused) -> np.ndarray:
  """`torch._utils._rebuild_parameter(_with_state)`: the data itself."""
  del requires_grad, backward_hooks, unused
  return data


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
}
for _name in _STORAGE_DTYPES:
  _SAFE_GLOBALS[('torch', _name)] = _StorageType(_name)
  # Old checkpoints saved on a GPU name the CUDA storage types.
  _SAFE_GLOBALS[('torch.cuda', _name)] = _StorageType(_name)


class _Unpickler(pickle.Unpickler):
  """Unpickler that resolves only `_SAFE_GLOBALS` and torch storages."""

  def __init__(self, file: BinaryIO,
               load_storage: Callable[[tuple], _Storage] | None = None):
    super().__init__(file, encoding='utf-8')
    self._load_storage = load_storage

  def find_class(self, module: str, name: str):
    try:
      return _SAFE_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f'refusing global {module}.{name}: not part of a tensor state dict '
          '(checkpoints are read as data; arbitrary classes are never '
          'loaded)') from None

  def persistent_load(self, pid):
    if self._load_storage is None:
      raise pickle.UnpicklingError('unexpected persistent id')
    if not isinstance(pid, tuple) or not pid:
      raise pickle.UnpicklingError(f'bad persistent id {pid!r}')
    typename = pid[0]
    if isinstance(typename, bytes):
      typename = typename.decode('ascii')
    if typename != 'storage':
      raise pickle.UnpicklingError(f'unsupported persistent id {typename!r}')
    if not isinstance(pid[1], _StorageType):
      raise pickle.UnpicklingError(f'bad storage type {pid[1]!r}')
    return self._load_storage(pid)


def _read_zip(path: str) -> Any:
  """Reads a zip-format (torch >= 1.6) checkpoint."""
  with zipfile.ZipFile(path) as zf:
    pkls = [n for n in zf.namelist()
            if n.endswith('data.pkl') and n.count('/') == 1]
    if len(pkls) != 1:
      raise ValueError(f'{path}: expected one <prefix>/data.pkl, found {pkls}')
    prefix = pkls[0][:-len('data.pkl')]
    byteorder = 'little'
    if prefix + 'byteorder' in zf.namelist():
      byteorder = zf.read(prefix + 'byteorder').decode('ascii').strip()
    storages: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> _Storage:
      if len(pid) != 5:
        raise pickle.UnpicklingError(f'bad zip storage id {pid!r}')
      _, stype, key, _, _ = pid
      key = str(key)
      if key not in storages:
        raw = zf.read(f'{prefix}data/{key}')
        dtype = stype.dtype
        if byteorder == 'big':
          dtype = dtype.newbyteorder('>')
        # Element count from the bytes: `numel` in the id is redundant, and
        # tensors are bounds-checked against the storage anyway.
        data = np.frombuffer(raw, dtype, count=len(raw) // dtype.itemsize)
        storages[key] = _Storage(data.astype(dtype.newbyteorder('<')),
                                 stype.bfloat16)
      return storages[key]

    with zf.open(pkls[0]) as f:
      return _Unpickler(io.BytesIO(f.read()), load_storage).load()


def _read_legacy(path: str) -> Any:
  """Reads a legacy (torch < 1.6) checkpoint stream."""
  with open(path, 'rb') as f:
    magic = _Unpickler(f).load()
    if magic != LEGACY_MAGIC:
      raise ValueError(f'{path}: not a PyTorch checkpoint (bad magic number)')
    version = _Unpickler(f).load()
    if version != LEGACY_PROTOCOL:
      raise ValueError(f'{path}: unsupported legacy protocol {version}')
    sys_info = _Unpickler(f).load()
    if isinstance(sys_info, dict) and not sys_info.get('little_endian', True):
      raise ValueError(f'{path}: big-endian legacy checkpoints not supported')
    # Storages are only declared in the pickle; their bytes follow it. Views
    # (old torch's storage slices) are resolved once the roots are read.
    roots: dict[str, tuple[_StorageType, int]] = {}
    pending: list[tuple[_Storage, str, int, int]] = []

    def load_storage(pid: tuple) -> _Storage:
      if len(pid) != 6:
        raise pickle.UnpicklingError(f'bad legacy storage id {pid!r}')
      _, stype, root_key, _, numel, view = pid
      root_key = str(root_key)
      roots.setdefault(root_key, (stype, int(numel)))
      placeholder = _Storage(np.empty(0, stype.dtype), stype.bfloat16)
      if view is None:
        pending.append((placeholder, root_key, 0, -1))
      else:
        _, view_offset, view_size = view
        pending.append((placeholder, root_key, int(view_offset),
                        int(view_size)))
      return placeholder

    # Tensors are rebuilt during unpickling, before the bytes are read, so
    # they are deferred (`_LegacyUnpickler`) and built once storages are full.
    result = _LegacyUnpickler(f, load_storage).load()
    keys = _Unpickler(f).load()
    data: dict[str, np.ndarray] = {}
    for key in keys:
      key = str(key)
      if key not in roots:
        raise ValueError(f'{path}: storage {key} not declared in the pickle')
      stype, numel = roots[key]
      (count,) = struct.unpack('<q', f.read(8))
      if count != numel:
        raise ValueError(f'{path}: storage {key} has {count} elements, '
                         f'pickle says {numel}')
      nbytes = count * stype.dtype.itemsize
      raw = f.read(nbytes)
      if len(raw) != nbytes:
        raise ValueError(f'{path}: truncated storage {key}')
      data[key] = np.frombuffer(raw, stype.dtype)
  for storage, key, start, length in pending:
    if key not in data:
      raise ValueError(f'{path}: storage {key} has no data')
    root = data[key]
    storage.data = root[start:] if length < 0 else root[start:start + length]
  return _resolve_deferred(result)


class _Deferred:
  """A tensor whose storage bytes are read after the pickle (legacy)."""

  def __init__(self, args: tuple):
    self.args = args


class _LegacyUnpickler(_Unpickler):
  """Rebuilds tensors lazily: legacy storages are read after the pickle."""

  def find_class(self, module: str, name: str):
    obj = super().find_class(module, name)
    if obj is _rebuild_tensor:
      return lambda *args: _Deferred(args)
    return obj


def _resolve_deferred(obj: Any) -> Any:
  if isinstance(obj, _Deferred):
    return _rebuild_tensor(*obj.args)
  if isinstance(obj, dict):
    # Keep the mapping type (OrderedDict) and its attributes (`_metadata`).
    for k in list(obj):
      obj[k] = _resolve_deferred(obj[k])
    return obj
  if isinstance(obj, list):
    return [_resolve_deferred(v) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_resolve_deferred(v) for v in obj)
  return obj


def load_torch_checkpoint(path: str) -> Any:
  """Unpickles a PyTorch checkpoint (zip or legacy) without torch.

  Args:
    path: a `.pth`/`.pt` file written by `torch.save`.

  Returns:
    The saved object with every tensor as a numpy array (bfloat16 as float32).

  Raises:
    pickle.UnpicklingError: the pickle names a global other than a tensor
      rebuild function, a storage type or OrderedDict.
    ValueError: the file is not a PyTorch checkpoint or is corrupt.
  """
  if zipfile.is_zipfile(path):
    return _read_zip(path)
  return _read_legacy(path)


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict as `{name: numpy array}`, without torch.

  Nested dicts (e.g. `{'state_dict': {...}}`) are flattened with '.'-joined
  keys; non-tensor entries are dropped.

  Args:
    path: a `.pth`/`.pt` file (zip or legacy format).

  Returns:
    Parameter name -> array, in file order.
  """
  out: dict[str, np.ndarray] = {}

  def visit(prefix: str, obj: Any) -> None:
    if isinstance(obj, np.ndarray):
      out[prefix] = obj
    elif isinstance(obj, Mapping):
      for k, v in obj.items():
        visit(f'{prefix}.{k}' if prefix else str(k), v)
    else:
      logging.debug('load_torch_state_dict: skipping %s (%s)', prefix,
                    type(obj).__name__)

  visit('', load_torch_checkpoint(path))
  if not out:
    raise ValueError(f'{path}: no tensors found')
  return out


def sha256(path: str) -> str:
  """Hex sha256 of a file."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


# --- Registry of kinds -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WeightsKind:
  """A kind of pretrained weights this codebase can convert and load.

  Attributes:
    name: the `--kind` name.
    standard_file: the PyTorch file users are expected to have.
    url: where that file is published (for messages only; never fetched).
    convert: PyTorch state dict -> Flax params.
    sha256_prefix: expected start of the file's sha256 (torchvision names its
      files `<name>-<first 8 hex of sha256>.pth`); '' to skip the check.
    description: one line for messages and docs.
  """
  name: str
  standard_file: str
  url: str
  convert: Callable[[Mapping[str, np.ndarray]], Params]
  sha256_prefix: str = ''
  description: str = ''


KINDS: dict[str, WeightsKind] = {}


def register(kind: WeightsKind) -> WeightsKind:
  """Adds a kind (the extension point for e.g. FID's Inception)."""
  if kind.name in KINDS:
    raise ValueError(f'weights kind {kind.name!r} already registered')
  KINDS[kind.name] = kind
  return kind


def get_kind(name: str) -> WeightsKind:
  try:
    return KINDS[name]
  except KeyError:
    raise ValueError(f'unknown weights kind {name!r}; known: '
                     f'{sorted(KINDS)}') from None


PARAMS_FILE = 'params.msgpack'
INFO_FILE = 'weights.json'


def missing_message(kind: str, path: str | None) -> str:
  """The error text for absent weights: file, source URL, convert command."""
  k = get_kind(kind)
  where = f' at {path!r}' if path else ''
  return (
      f'{k.description or k.name} weights not found{where}. Get '
      f'{k.standard_file} (published at {k.url}; this code never downloads '
      f'it), then convert it:\n  python -m medjax.weights convert '
      f'--kind={k.name} --src=/path/to/{k.standard_file} --out=DIR\n'
      f'and pass DIR (or the .pth file itself) as the weights path.')


def require(kind: str, path: str | None) -> str:
  """Checks that weights for `kind` exist at `path`.

  Args:
    kind: a registered kind.
    path: a converted directory, its params.msgpack, or the PyTorch file.

  Returns:
    `path`.

  Raises:
    FileNotFoundError: nothing usable there; the message says what to get and
      how to convert it.
  """
  get_kind(kind)
  ok = bool(path) and (
      os.path.isfile(os.path.join(path, PARAMS_FILE)) if os.path.isdir(path)
      else os.path.isfile(path))
  if not ok:
    raise FileNotFoundError(missing_message(kind, path))
  return path


def convert(kind: str, src: str, out: str) -> dict:
  """Converts a PyTorch file to a Flax checkpoint directory.

  Args:
    kind: a registered kind.
    src: the PyTorch file.
    out: output directory (created); gets params.msgpack and weights.json.

  Returns:
    The info written to weights.json.
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top
  k = get_kind(kind)
  if not os.path.isfile(src):
    raise FileNotFoundError(missing_message(kind, src))
  digest = sha256(src)
  if k.sha256_prefix and not digest.startswith(k.sha256_prefix):
    logging.warning('%s: sha256 %s does not start with %s (the standard %s); '
                    'converting anyway.', src, digest, k.sha256_prefix,
                    k.standard_file)
  params = k.convert(load_torch_state_dict(src))
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, PARAMS_FILE), 'wb') as f:
    f.write(serialization.msgpack_serialize(_to_numpy(params)))
  info = {'kind': k.name, 'source_file': os.path.basename(src),
          'source_sha256': digest, 'standard_file': k.standard_file,
          'params_file': PARAMS_FILE}
  with open(os.path.join(out, INFO_FILE), 'w') as f:
    json.dump(info, f, indent=2)
  return info


def _to_numpy(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def load(kind: str, path_or_dir: str | None) -> Params:
  """Loads Flax params for `kind`.

  Args:
    kind: a registered kind.
    path_or_dir: a directory written by `convert`, its params.msgpack, or the
      PyTorch file itself (converted in memory).

  Returns:
    The params collection (apply as `{'params': params}`).

  Raises:
    FileNotFoundError: no weights there (the message says how to get them).
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top
  path = require(kind, path_or_dir)
  k = get_kind(kind)
  if os.path.isdir(path):
    info_path = os.path.join(path, INFO_FILE)
    if os.path.isfile(info_path):
      with open(info_path) as f:
        saved = json.load(f).get('kind')
      if saved != k.name:
        raise ValueError(f'{path} holds {saved!r} weights, not {k.name!r}')
    path = os.path.join(path, PARAMS_FILE)
  if path.endswith('.msgpack'):
    with open(path, 'rb') as f:
      return serialization.msgpack_restore(f.read())
  return k.convert(load_torch_state_dict(path))


def _lazy(module: str, fn: str, *args) -> Callable[[Mapping[str, np.ndarray]],
                                                  Params]:
  """A converter that imports `medjax.models.<module>` only when it runs."""
  def convert(state_dict: Mapping[str, np.ndarray]) -> Params:
    import importlib  # pylint: disable=g-import-not-at-top
    mod = importlib.import_module(f'medjax.models.{module}')
    return getattr(mod, fn)(state_dict, *args)
  return convert


register(WeightsKind(
    name='vgg19',
    standard_file='vgg19-dcbb9e9d.pth',
    url='https://download.pytorch.org/models/vgg19-dcbb9e9d.pth',
    convert=_lazy('vgg', 'convert_vgg19'),
    sha256_prefix='dcbb9e9d',
    description='torchvision VGG19 (ImageNet)',
))
register(WeightsKind(
    name='alexnet',
    standard_file='alexnet-owt-7be5be79.pth',
    url='https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
    convert=_lazy('lpips', 'convert_alexnet'),
    sha256_prefix='7be5be79',
    description='torchvision AlexNet (ImageNet; LPIPS backbone)',
))
register(WeightsKind(
    name='vgg16',
    standard_file='vgg16-397923af.pth',
    url='https://download.pytorch.org/models/vgg16-397923af.pth',
    convert=_lazy('lpips', 'convert_vgg16'),
    sha256_prefix='397923af',
    description='torchvision VGG16 (ImageNet; LPIPS backbone)',
))
register(WeightsKind(
    name='lpips_alex',
    standard_file='alex.pth',
    url='https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/'
        'weights/v0.1/alex.pth',
    convert=_lazy('lpips', 'convert_lin', 'alex'),
    description='LPIPS v0.1 linear layers for AlexNet (lpips package)',
))
register(WeightsKind(
    name='lpips_vgg',
    standard_file='vgg.pth',
    url='https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/'
        'weights/v0.1/vgg.pth',
    convert=_lazy('lpips', 'convert_lin', 'vgg'),
    description='LPIPS v0.1 linear layers for VGG16 (lpips package)',
))
register(WeightsKind(
    name='inception_fid',
    standard_file='pt_inception-2015-12-05-6726825d.pth',
    url=('https://github.com/mseitzer/pytorch-fid/releases/download/'
         'fid_weights/pt_inception-2015-12-05-6726825d.pth'),
    convert=_lazy('inception', 'convert_inception'),
    description="pytorch-fid's InceptionV3 (FID, KID, precision/recall)",
))


# --- Command -----------------------------------------------------------------


def _define_flags():
  """Defined only when run as a command, so that the module imports
  cleanly beside other commands (absl flags are global)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('kind', None, f'Weights kind: {sorted(KINDS)}.')
  flags.DEFINE_string('src', None, 'The PyTorch file.')
  flags.DEFINE_string('out', None, 'Output directory.')


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) != 2 or argv[1] != 'convert':
    raise app.UsageError('usage: python -m medjax.weights convert '
                         '--kind=KIND --src=FILE.pth --out=DIR')
  f = flags.FLAGS
  for name in ('kind', 'src', 'out'):
    if not getattr(f, name):
      raise app.UsageError(f'--{name} is required')
  try:
    info = convert(f.kind, f.src, f.out)
  except FileNotFoundError as e:
    print(e, file=sys.stderr)
    return 1
  print(json.dumps(info, indent=2))
  return 0


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
