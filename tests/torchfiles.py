"""A tiny `torch.save` look-alike for tests: writes PyTorch checkpoint files
(zip and legacy layouts) without torch.

Stand-in tensors pickle with torch's global names (`torch._utils.
_rebuild_tensor_v2`, `torch.FloatStorage`) through fake modules placed in
sys.modules only while pickling. `save_state_dict({name: ndarray}, path)` is
the usual entry point.
"""

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile
from unittest import mock

import numpy as np

from medjax import weights

_STORAGE_NAMES = {np.dtype('float32'): 'FloatStorage',
                  np.dtype('float16'): 'HalfStorage',
                  np.dtype('float64'): 'DoubleStorage',
                  np.dtype('int64'): 'LongStorage',
                  np.dtype('uint8'): 'ByteStorage',
                  'bf16': 'BFloat16Storage'}


def _fake_torch():
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')
  torch._utils = utils
  for name in _STORAGE_NAMES.values():
    setattr(torch, name, type(name, (), {'__module__': 'torch'}))

  def _rebuild_tensor_v2(*args):
    del args

  def _rebuild_parameter(*args):
    del args

  for fn in (_rebuild_tensor_v2, _rebuild_parameter):
    fn.__module__ = 'torch._utils'
    fn.__qualname__ = fn.__name__
    setattr(utils, fn.__name__, fn)
  return torch, utils


@contextlib.contextmanager
def _torch_names():
  torch, utils = _fake_torch()
  with mock.patch.dict(sys.modules, {'torch': torch, 'torch._utils': utils}):
    yield torch, utils


class Storage:
  """A flat storage: raw little-endian bytes of `numel` elements."""

  def __init__(self, key: str, values: np.ndarray, kind=None):
    self.key = key
    self.kind = kind or values.dtype
    self.values = values
    self.numel = values.size

  def raw(self) -> bytes:
    return self.values.astype(self.values.dtype.newbyteorder('<')).tobytes()


class Tensor:
  """Pickles as `_rebuild_tensor_v2(storage, offset, size, stride, ...)`."""

  def __init__(self, storage, offset, size, stride, parameter=False):
    self.args = (storage, offset, tuple(size), tuple(stride))
    self.parameter = parameter

  def __reduce__(self):
    utils = sys.modules['torch._utils']
    t = (utils._rebuild_tensor_v2,
         self.args + (False, collections.OrderedDict()))
    if self.parameter:
      inner = Tensor(*self.args)
      return (utils._rebuild_parameter,
              (inner, True, collections.OrderedDict()))
    return t


class _Pickler(pickle.Pickler):

  def __init__(self, f, legacy: bool, storages: dict):
    super().__init__(f, protocol=2)
    self.legacy = legacy
    self.storages = storages

  def persistent_id(self, obj):
    if not isinstance(obj, Storage):
      return None
    self.storages.setdefault(obj.key, obj)
    stype = getattr(sys.modules['torch'], _STORAGE_NAMES[obj.kind])
    pid = ('storage', stype, obj.key, 'cpu', obj.numel)
    return pid + (None,) if self.legacy else pid


def save_zip(obj, path):
  storages = {}
  buf = io.BytesIO()
  with _torch_names():
    _Pickler(buf, False, storages).dump(obj)
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
    zf.writestr('archive/data.pkl', buf.getvalue())
    zf.writestr('archive/byteorder', 'little')
    for key, s in storages.items():
      zf.writestr(f'archive/data/{key}', s.raw())
    zf.writestr('archive/version', '3\n')


def save_legacy(obj, path):
  storages = {}
  with open(path, 'wb') as f, _torch_names():
    pickle.dump(weights.LEGACY_MAGIC, f, protocol=2)
    pickle.dump(weights.LEGACY_PROTOCOL, f, protocol=2)
    pickle.dump({'protocol_version': 1001, 'little_endian': True,
                 'type_sizes': {'short': 2, 'int': 4, 'long': 8}}, f,
                protocol=2)
    _Pickler(f, True, storages).dump(obj)
    pickle.dump(list(storages), f, protocol=2)
    for s in storages.values():
      f.write(struct.pack('<q', s.numel))
      f.write(s.raw())


def _contiguous_strides(shape):
  strides, acc = [], 1
  for n in reversed(shape):
    strides.append(acc)
    acc *= n
  return tuple(reversed(strides))


def save_state_dict(state_dict, path, legacy: bool = False) -> None:
  """Writes {name: ndarray} as a PyTorch state dict file at `path`."""
  obj = collections.OrderedDict()
  for i, (k, v) in enumerate(state_dict.items()):
    v = np.asarray(v)
    obj[k] = Tensor(Storage(str(i), v.ravel()), 0, v.shape,
                    _contiguous_strides(v.shape))
  (save_legacy if legacy else save_zip)(obj, path)
