"""Tests for medjax.weights (torch-free checkpoint reading) and models.vgg.

The tests write their own PyTorch-layout files with `torchfiles` (a tiny
torch.save look-alike), in both the zip and the legacy stream layout.
"""

import collections
import json
import os
import pickle
import subprocess
import sys
import zipfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import weights
from medjax.models import vgg
from torchfiles import save_legacy, save_state_dict, save_zip, Storage, Tensor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gather(flat, offset, size, stride):
  """Reference strided read, index by index (independent of as_strided)."""
  out = np.empty(size, flat.dtype)
  for idx in np.ndindex(*size):
    out[idx] = flat[offset + sum(i * s for i, s in zip(idx, stride))]
  return out


def _example():
  rng = np.random.default_rng(0)
  f32 = rng.standard_normal(12).astype(np.float32)
  shared = rng.standard_normal(10).astype(np.float32)
  f16 = rng.standard_normal(6).astype(np.float16)
  i64 = np.array([-3, 0, 2**40, 7], np.int64)
  u8 = np.arange(5, dtype=np.uint8)
  bf_f32 = np.array([1.0, -2.5, 0.15625, 2.0**100], np.float32)
  bf_bits = (bf_f32.view(np.uint32) >> 16).astype(np.uint16)
  s_f32 = Storage('0', f32)
  s_shared = Storage('1', shared)
  obj = collections.OrderedDict()
  obj['contig'] = Tensor(s_f32, 0, (3, 4), (4, 1))
  obj['transposed'] = Tensor(s_f32, 0, (4, 3), (1, 4))
  obj['strided'] = Tensor(s_f32, 1, (2, 2), (6, 2))
  obj['shared_a'] = Tensor(s_shared, 0, (4,), (1,))
  obj['shared_b'] = Tensor(s_shared, 3, (7,), (1,), parameter=True)
  obj['half'] = Tensor(Storage('2', f16), 0, (2, 3), (3, 1))
  obj['long'] = Tensor(Storage('3', i64), 0, (4,), (1,))
  obj['byte'] = Tensor(Storage('4', u8), 2, (3,), (1,))
  obj['bf16'] = Tensor(Storage('5', bf_bits, 'bf16'), 0, (4,), (1,))
  obj['scalar'] = Tensor(s_f32, 5, (), ())
  obj._metadata = collections.OrderedDict({'': {'version': 1}})
  expected = {
      'contig': f32.reshape(3, 4),
      'transposed': f32.reshape(3, 4).T,
      'strided': _gather(f32, 1, (2, 2), (6, 2)),
      'shared_a': shared[:4],
      'shared_b': shared[3:],
      'half': f16.reshape(2, 3),
      'long': i64,
      'byte': u8[2:],
      'bf16': bf_f32,  # exactly representable in bfloat16
      'scalar': np.float32(f32[5]),
  }
  return obj, expected


@pytest.mark.parametrize('save', [save_zip, save_legacy])
def test_reads_both_formats(tmp_path, save):
  obj, expected = _example()
  path = str(tmp_path / 'ckpt.pth')
  had_torch = 'torch' in sys.modules  # Real torch, imported elsewhere.
  save(obj, path)
  assert ('torch' in sys.modules) == had_torch  # The fake one is gone.
  got = weights.load_torch_state_dict(path)
  assert list(got) == list(expected)
  for k, want in expected.items():
    assert got[k].dtype == np.asarray(want).dtype, k
    assert got[k].shape == np.shape(want), k
    np.testing.assert_array_equal(got[k], want, err_msg=k)
  # Copies, not views of one shared buffer.
  got['shared_a'][:] = 0
  np.testing.assert_array_equal(got['shared_b'], expected['shared_b'])


def test_nested_state_dict_is_flattened(tmp_path):
  obj, expected = _example()
  path = str(tmp_path / 'nested.pth')
  save_zip({'state_dict': obj, 'epoch': 3}, path)
  got = weights.load_torch_state_dict(path)
  np.testing.assert_array_equal(got['state_dict.transposed'],
                                expected['transposed'])
  assert 'epoch' not in got


_EVIL = b"cos\nsystem\n(S'echo pwned > /dev/null'\ntR."


@pytest.mark.parametrize('layout', ['zip', 'legacy'])
def test_refuses_unsafe_globals(tmp_path, layout):
  path = str(tmp_path / 'evil.pth')
  if layout == 'zip':
    with zipfile.ZipFile(path, 'w') as zf:
      zf.writestr('archive/data.pkl', _EVIL)
  else:
    with open(path, 'wb') as f:
      for x in (weights.LEGACY_MAGIC, weights.LEGACY_PROTOCOL, {}):
        pickle.dump(x, f, protocol=2)
      f.write(_EVIL)
  with mock.patch('os.system') as system:
    with pytest.raises(pickle.UnpicklingError, match='os.system'):
      weights.load_torch_state_dict(path)
    system.assert_not_called()


def test_refuses_out_of_bounds_tensor(tmp_path):
  path = str(tmp_path / 'oob.pth')
  save_zip({'x': Tensor(Storage('0', np.zeros(4, np.float32)), 2, (3,),
                        (1,))}, path)
  with pytest.raises(pickle.UnpicklingError, match='exceeds'):
    weights.load_torch_state_dict(path)


def test_not_a_checkpoint(tmp_path):
  path = tmp_path / 'junk.pth'
  pickle.dump('hello', open(path, 'wb'))
  with pytest.raises(ValueError, match='magic'):
    weights.load_torch_state_dict(str(path))


# --- VGG19 ------------------------------------------------------------------


def _fake_vgg19_state_dict(seed=0):
  """Random values with torchvision vgg19's real key names and shapes."""
  rng = np.random.default_rng(seed)
  sd = collections.OrderedDict()
  cin = 3
  for name, idx in vgg.torch_indices().items():
    cout = vgg._FEATURES[int(name[4])]
    std = np.sqrt(2.0 / (9 * cin))
    sd[f'features.{idx}.weight'] = (
        rng.standard_normal((cout, cin, 3, 3), np.float32) * std)
    sd[f'features.{idx}.bias'] = rng.standard_normal(cout, np.float32) * 0.1
    cin = cout
  sd['classifier.0.weight'] = np.zeros((8, 4), np.float32)  # ignored
  sd['classifier.0.bias'] = np.zeros((8,), np.float32)
  return sd


def test_torch_indices():
  assert list(vgg.torch_indices().values()) == [
      0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def _ref_conv(x, w, b):
  """PyTorch Conv2d(3x3, padding=1) on NHWC numpy: a cross-correlation."""
  n, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, wd, w.shape[0]), np.float64)
  for dy in range(3):
    for dx in range(3):
      out += xp[:, dy:dy + h, dx:dx + wd, :] @ w[:, :, dy, dx].T
  return out + b


def test_convert_and_first_block_matches_reference():
  sd = _fake_vgg19_state_dict()
  params = weights.get_kind('vgg19').convert(sd)
  # Every layer's shapes match the module's own init.
  shapes = jax.eval_shape(
      lambda k: vgg.VGG19Features().init(k, jnp.zeros((1, 16, 16, 3))),
      jax.random.key(0))
  assert jax.tree.map(lambda a: a.shape, params) == jax.tree.map(
      lambda a: a.shape, shapes['params'])

  rng = np.random.default_rng(1)
  img = rng.uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
  x = np.asarray(vgg.to_vgg_input(jnp.asarray(img)))
  assert x.shape == (2, 8, 8, 3) and x.min() >= 0 and x.max() <= 1
  np.testing.assert_array_equal(x[..., 0], x[..., 2])

  xn = (x.astype(np.float64) - vgg.IMAGENET_MEAN) / vgg.IMAGENET_STD
  h1 = _ref_conv(xn, sd['features.0.weight'], sd['features.0.bias'])
  h2 = _ref_conv(np.maximum(h1, 0), sd['features.2.weight'],
                 sd['features.2.bias'])
  pooled = np.maximum(h2, 0).reshape(2, 4, 2, 4, 2, 64).max(axis=(2, 4))
  h3 = _ref_conv(pooled, sd['features.5.weight'], sd['features.5.bias'])
  for layer, after_relu, want in [('conv1_1', False, h1),
                                  ('conv1_2', True, np.maximum(h2, 0)),
                                  ('conv2_1', False, h3)]:
    model = vgg.VGG19Features(last_layer=layer, after_relu=after_relu)
    got = model.apply({'params': params}, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4,
                               err_msg=layer)


def _ref_pool_grad(x, g):
  """2x2/2 max-pool gradient, loop by loop: the first maximum in row-major
  window order takes it (PyTorch's rule)."""
  dx = np.zeros(x.shape, g.dtype)
  for b, i, j, c in np.ndindex(g.shape):
    window = x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c].reshape(-1)
    k = int(np.argmax(window))  # the first maximum
    dx[b, 2 * i + k // 2, 2 * j + k % 2, c] = g[b, i, j, c]
  return dx


@pytest.mark.parametrize('shape', [(2, 6, 8, 3), (1, 7, 5, 2)])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_max_pool_values_and_gradient_with_ties(shape, dtype):
  import flax.linen as nn
  rng = np.random.default_rng(0)
  # Values in {0, 1, 2}: most windows hold ties, the case the rule decides.
  x = jnp.asarray(rng.integers(0, 3, shape), dtype)
  out_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
  g = jnp.asarray(rng.normal(size=out_shape), dtype)
  y = vgg.max_pool_2x2(x)
  np.testing.assert_array_equal(y, nn.max_pool(x, (2, 2), strides=(2, 2)))
  dx = jax.vjp(vgg.max_pool_2x2, x)[1](g)[0]
  assert dx.shape == x.shape and dx.dtype == x.dtype
  want = _ref_pool_grad(np.asarray(x, np.float32), np.asarray(g, np.float32))
  np.testing.assert_array_equal(np.asarray(dx, np.float32), want)
  # XLA's own max-pool gradient (select-and-scatter) agrees.
  xla = jax.vjp(lambda a: nn.max_pool(a, (2, 2), strides=(2, 2)), x)[1](g)[0]
  np.testing.assert_array_equal(dx, xla)


def test_convert_missing_keys():
  sd = _fake_vgg19_state_dict()
  del sd['features.34.bias']
  with pytest.raises(KeyError, match='features.34.bias'):
    vgg.convert_vgg19(sd)


def test_missing_weights_message(tmp_path):
  for fn in (weights.load, weights.require):
    with pytest.raises(FileNotFoundError) as e:
      fn('vgg19', str(tmp_path / 'nowhere'))
    msg = str(e.value)
    assert 'vgg19-dcbb9e9d.pth' in msg
    assert 'python -m medjax.weights convert --kind=vgg19' in msg
    assert 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth' in msg
  with pytest.raises(FileNotFoundError):
    weights.load('vgg19', None)


def test_convert_command_round_trip(tmp_path):
  sd = _fake_vgg19_state_dict(seed=2)
  src = str(tmp_path / 'vgg19-test.pth')
  save_state_dict(sd, src)
  out = str(tmp_path / 'vgg19')
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.weights', 'convert', '--kind=vgg19',
       f'--src={src}', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  info = json.load(open(os.path.join(out, weights.INFO_FILE)))
  assert info['kind'] == 'vgg19'
  assert info['source_file'] == 'vgg19-test.pth'
  assert info['source_sha256'] == weights.sha256(src)
  want = vgg.convert_vgg19(sd)
  for path in (out, src):  # converted dir, and the .pth converted in memory
    got = weights.load('vgg19', path)
    assert set(got) == set(want)
    for name in want:
      for leaf in ('kernel', 'bias'):
        np.testing.assert_array_equal(got[name][leaf], want[name][leaf])

  missing = subprocess.run(
      [sys.executable, '-m', 'medjax.weights', 'convert', '--kind=vgg19',
       f'--src={tmp_path}/absent.pth', f'--out={out}2'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert missing.returncode != 0
  assert 'vgg19-dcbb9e9d.pth' in missing.stderr
  assert 'python -m medjax.weights convert' in missing.stderr


def test_reader_does_not_import_torch(tmp_path):
  obj, _ = _example()
  path = str(tmp_path / 'ckpt.pth')
  save_zip(obj, path)
  code = ('import sys; from medjax import weights; '
          f'weights.load_torch_state_dict({path!r}); '
          "assert 'torch' not in sys.modules")
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120)


def test_files_written_by_real_torch_when_installed(tmp_path):
  # The reader never imports torch; where torch happens to be installed, check
  # it against files torch itself wrote, in both layouts.
  torch = pytest.importorskip('torch')
  base = torch.randn(6, 5)
  sd = {'w': torch.randn(3, 4, 2, 2), 't': base.t(), 's': base[1:, ::2],
        'h': torch.randn(4).half(), 'i': torch.arange(7),
        'bf': torch.randn(3).bfloat16(), 'p': torch.nn.Parameter(torch.ones(2))}
  for zipped in (True, False):
    path = str(tmp_path / f'{zipped}.pth')
    torch.save(sd, path, _use_new_zipfile_serialization=zipped)
    got = weights.load_torch_state_dict(path)
    for k, v in sd.items():
      want = (v.float() if v.dtype == torch.bfloat16 else v).detach().numpy()
      np.testing.assert_array_equal(got[k], want)
