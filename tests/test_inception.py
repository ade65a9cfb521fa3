"""Tests for medjax.models.inception (pytorch-fid's InceptionV3) and its
converter.

Checkpoints are written with `torchfiles` (no torch) using every real key name
and shape of `pt_inception-2015-12-05-6726825d.pth` and random values. The
parity test against PyTorch runs only where torch is installed; it defines
pytorch-fid's network itself (no pytorch-fid, no torchvision).
"""

import collections
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import weights
from medjax.models import inception
from torchfiles import save_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_state_dict(seed=0, extras=True):
  """Random values with pytorch-fid's key names and shapes.

  He-scaled kernels and BatchNorm stats near (0, 1) keep activations O(1-10)
  through the ~100 layers.
  """
  rng = np.random.default_rng(seed)
  sd = collections.OrderedDict()
  for prefix, (_, cin, cout, (kh, kw), _, _) in inception.conv_specs():
    std = np.sqrt(2.0 / (cin * kh * kw))
    sd[f'{prefix}.conv.weight'] = (
        rng.standard_normal((cout, cin, kh, kw), np.float32) * std)
    sd[f'{prefix}.bn.weight'] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    sd[f'{prefix}.bn.bias'] = (0.1 * rng.standard_normal(cout)).astype(
        np.float32)
    sd[f'{prefix}.bn.running_mean'] = (
        0.1 * rng.standard_normal(cout)).astype(np.float32)
    sd[f'{prefix}.bn.running_var'] = rng.uniform(0.5, 1.5, cout).astype(
        np.float32)
    if extras:
      sd[f'{prefix}.bn.num_batches_tracked'] = np.array(0, np.int64)
  if extras:
    sd['fc.weight'] = np.zeros((1008, 2048), np.float32)  # ignored
    sd['fc.bias'] = np.zeros((1008,), np.float32)
  return sd


@pytest.fixture(scope='module')
def fake_sd():
  return _fake_state_dict()


@pytest.fixture(scope='module')
def fake_params(fake_sd):
  return inception.convert_inception(fake_sd)


def _shapes(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


def test_key_names_and_count():
  prefixes = [p for p, _ in inception.conv_specs()]
  assert len(prefixes) == 94  # torchvision Inception3's BasicConv2d count
  assert prefixes[0] == 'Conv2d_1a_3x3'
  assert 'Mixed_5b.branch5x5_2' in prefixes
  assert 'Mixed_6e.branch7x7dbl_5' in prefixes
  assert 'Mixed_7a.branch7x7x3_4' in prefixes
  assert prefixes[-1] == 'Mixed_7c.branch_pool'


def test_convert_shapes_match_init(fake_params):
  shapes = jax.eval_shape(
      lambda k: inception.FIDInceptionV3().init(
          k, jnp.zeros((1, 299, 299, 3))), jax.random.key(0))
  assert _shapes(fake_params) == _shapes(shapes['params'])
  k = fake_params['Mixed_5b']['branch5x5_2']['conv']['kernel']
  assert k.shape == (5, 5, 48, 64)
  assert set(fake_params['Conv2d_1a_3x3']['bn']) == {'scale', 'bias', 'mean',
                                                     'var'}


def test_convert_files_both_layouts(tmp_path, fake_sd, fake_params):
  zip_src = str(tmp_path / 'inc-zip.pth')
  legacy_src = str(tmp_path / 'inc-legacy.pth')
  save_state_dict(fake_sd, zip_src)
  save_state_dict(fake_sd, legacy_src, legacy=True)
  out = str(tmp_path / 'inception')
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.weights', 'convert',
       '--kind=inception_fid', f'--src={legacy_src}', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  info = json.load(open(os.path.join(out, weights.INFO_FILE)))
  assert info['kind'] == 'inception_fid'
  assert info['standard_file'] == 'pt_inception-2015-12-05-6726825d.pth'
  for path in (out, zip_src):  # converted dir; .pth converted in memory
    got = weights.load('inception_fid', path)
    assert _shapes(got) == _shapes(fake_params)
    jax.tree.map(np.testing.assert_array_equal, got, fake_params)


def test_convert_missing_key(fake_sd):
  sd = dict(fake_sd)
  del sd['Mixed_6c.branch7x7dbl_3.bn.running_var']
  with pytest.raises(KeyError, match='Mixed_6c.branch7x7dbl_3.bn.running_var'):
    inception.convert_inception(sd)
  sd = dict(fake_sd)
  sd['Conv2d_1a_3x3.conv.weight'] = np.zeros((32, 3, 5, 5), np.float32)
  with pytest.raises(ValueError, match='Conv2d_1a_3x3.conv.weight'):
    inception.convert_inception(sd)


def test_missing_weights_message(tmp_path):
  for fn in (weights.load, weights.require):
    with pytest.raises(FileNotFoundError) as e:
      fn('inception_fid', str(tmp_path / 'nowhere'))
    msg = str(e.value)
    assert 'pt_inception-2015-12-05-6726825d.pth' in msg
    assert 'python -m medjax.weights convert --kind=inception_fid' in msg
    assert 'mseitzer/pytorch-fid/releases' in msg


# --- Numpy references --------------------------------------------------------


def _ref_resize_axis(x, out, axis):
  """PyTorch bilinear align_corners=False along one axis, pixel by pixel.

  Source coordinates in float32 scalars, as ATen computes them for float32
  tensors (in float64 they differ by up to ~4e-6 at 299 pixels).
  """
  f32 = np.float32
  n = x.shape[axis]
  scale = f32(n) / f32(out)
  slices = []
  for i in range(out):
    src = max(scale * (f32(i) + f32(0.5)) - f32(0.5), f32(0))
    i0 = min(int(np.floor(src)), n - 1)
    i1 = min(i0 + 1, n - 1)
    w1 = float(src - f32(i0))
    slices.append((1 - w1) * np.take(x, i0, axis) + w1 * np.take(x, i1, axis))
  return np.stack(slices, axis)


@pytest.mark.parametrize('hw', [(64, 64), (37, 50), (400, 320), (299, 299)])
def test_resize_matches_pytorch_formula(hw):
  rng = np.random.default_rng(3)
  x = rng.uniform(0, 1, (2,) + hw + (3,))
  want = _ref_resize_axis(_ref_resize_axis(x, 299, 1), 299, 2)
  got = inception.resize_bilinear(jnp.asarray(x, jnp.float32), (299, 299))
  assert got.shape == (2, 299, 299, 3)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
  if hw == (299, 299):
    np.testing.assert_allclose(got, x, rtol=0, atol=1e-6)


def test_preprocess_gray_and_uint8():
  rng = np.random.default_rng(4)
  gray = rng.integers(0, 256, (2, 40, 30, 1), dtype=np.uint8)
  rgb = np.repeat(gray, 3, axis=-1).astype(np.float32) / 255
  a = inception.preprocess(jnp.asarray(gray))
  b = inception.preprocess(jnp.asarray(rgb))
  np.testing.assert_allclose(a, b, atol=1e-6)
  assert a.shape == (2, 299, 299, 3)
  assert float(a.min()) >= -1 - 1e-6 and float(a.max()) <= 1 + 1e-6
  with pytest.raises(ValueError):
    inception.preprocess(jnp.zeros((1, 8, 8, 2)))


def _ref_basic_conv(x, sd, prefix, stride=1, pad=(0, 0)):
  """BasicConv2d on NHWC float64: cross-correlation, BN(eps=1e-3), ReLU."""
  w = sd[f'{prefix}.conv.weight'].astype(np.float64)
  _, _, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
  ho = (xp.shape[1] - kh) // stride + 1
  wo = (xp.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, w.shape[0]))
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i:i + stride * (ho - 1) + 1:stride,
                 j:j + stride * (wo - 1) + 1:stride, :]
      out += patch @ w[:, :, i, j].T
  bn = {k: sd[f'{prefix}.bn.{k}'].astype(np.float64)
        for k in ('weight', 'bias', 'running_mean', 'running_var')}
  out = ((out - bn['running_mean']) / np.sqrt(bn['running_var'] + 1e-3)
         * bn['weight'] + bn['bias'])
  return np.maximum(out, 0)


def _ref_avg_pool_no_pad(x):
  """3x3 / 1, padding 1, count_include_pad=False."""
  h, w = x.shape[1:3]
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ones = np.pad(np.ones((1, h, w, 1)), ((0, 0), (1, 1), (1, 1), (0, 0)))
  s = sum(xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
  c = sum(ones[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
  return s / c


def test_stem_conv_and_block_a_match_reference(fake_sd, fake_params):
  rng = np.random.default_rng(5)
  x = rng.uniform(-1, 1, (2, 11, 9, 3))
  want = _ref_basic_conv(x, fake_sd, 'Conv2d_1a_3x3', stride=2)
  got = inception.BasicConv2d(32, (3, 3), 2, (0, 0)).apply(
      {'params': fake_params['Conv2d_1a_3x3']}, jnp.asarray(x, jnp.float32))
  assert got.shape == (2, 5, 4, 32)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

  # Mixed_5b (FIDInceptionA, pool_features=32) on a small 192-channel map.
  x = np.maximum(rng.standard_normal((2, 5, 6, 192)), 0)
  p = 'Mixed_5b.'
  b1 = _ref_basic_conv(x, fake_sd, p + 'branch1x1')
  b5 = _ref_basic_conv(_ref_basic_conv(x, fake_sd, p + 'branch5x5_1'),
                       fake_sd, p + 'branch5x5_2', pad=(2, 2))
  b3 = _ref_basic_conv(x, fake_sd, p + 'branch3x3dbl_1')
  b3 = _ref_basic_conv(b3, fake_sd, p + 'branch3x3dbl_2', pad=(1, 1))
  b3 = _ref_basic_conv(b3, fake_sd, p + 'branch3x3dbl_3', pad=(1, 1))
  bp = _ref_basic_conv(_ref_avg_pool_no_pad(x), fake_sd, p + 'branch_pool')
  want = np.concatenate([b1, b5, b3, bp], axis=-1)
  got = inception.InceptionBlock('A', 32).apply(
      {'params': fake_params['Mixed_5b']}, jnp.asarray(x, jnp.float32))
  assert got.shape == (2, 5, 6, 256)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _unmerged_block(kind, arg, params, x, fold_bn):
  """pytorch-fid's block as written: every BasicConv2d on its own, the
  average pools before their convolution."""
  specs = {s[0]: s for s in inception.block_convs(kind, x.shape[-1], arg)}

  def bc(name, h):
    _, _, cout, k, s, p = specs[name]
    return inception.BasicConv2d(cout, k, s, p, fold_bn=fold_bn).apply(
        {'params': params[name]}, h)

  def chain(h, *names):
    for n in names:
      h = bc(n, h)
    return h

  avg = lambda h: jnp.asarray(_ref_avg_pool_no_pad(np.asarray(h, np.float64)),
                              jnp.float32)
  maxp = lambda h, s, pad: jax.lax.reduce_window(
      h, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, s, s, 1),
      ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  if kind == 'A':
    outs = [bc('branch1x1', x), chain(x, 'branch5x5_1', 'branch5x5_2'),
            chain(x, 'branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'),
            bc('branch_pool', avg(x))]
  elif kind == 'B':
    outs = [bc('branch3x3', x),
            chain(x, 'branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'),
            maxp(x, 2, 0)]
  elif kind == 'C':
    outs = [bc('branch1x1', x),
            chain(x, 'branch7x7_1', 'branch7x7_2', 'branch7x7_3'),
            chain(x, 'branch7x7dbl_1', 'branch7x7dbl_2', 'branch7x7dbl_3',
                  'branch7x7dbl_4', 'branch7x7dbl_5'),
            bc('branch_pool', avg(x))]
  elif kind == 'D':
    outs = [chain(x, 'branch3x3_1', 'branch3x3_2'),
            chain(x, 'branch7x7x3_1', 'branch7x7x3_2', 'branch7x7x3_3',
                  'branch7x7x3_4'),
            maxp(x, 2, 0)]
  else:
    b3 = bc('branch3x3_1', x)
    d3 = chain(x, 'branch3x3dbl_1', 'branch3x3dbl_2')
    pool = avg(x) if kind == 'E1' else maxp(x, 1, 1)
    outs = [bc('branch1x1', x), bc('branch3x3_2a', b3),
            bc('branch3x3_2b', b3), bc('branch3x3dbl_3a', d3),
            bc('branch3x3dbl_3b', d3), bc('branch_pool', pool)]
  return jnp.concatenate(outs, axis=-1)


@pytest.mark.parametrize('fold_bn', [False, True])
@pytest.mark.parametrize('block', ['Mixed_5c', 'Mixed_6a', 'Mixed_6b',
                                   'Mixed_7a', 'Mixed_7b', 'Mixed_7c'])
def test_blocks_equal_their_unmerged_definition(fake_params, block, fold_bn):
  """Each block's 1x1 convolutions of its input run as one, and its average
  pool after its convolution: the same values as the block as written."""
  _, kind, cin, arg = next(m for m in inception._MIXED if m[0] == block)
  x = jnp.asarray(np.maximum(np.random.default_rng(3).standard_normal(
      (2, 7, 6, cin)), 0), jnp.float32)
  want = _unmerged_block(kind, arg, fake_params[block], x, fold_bn)
  got = inception.InceptionBlock(kind, arg, fold_bn=fold_bn).apply(
      {'params': fake_params[block]}, x)
  assert got.shape == want.shape
  scale = float(jnp.max(jnp.abs(want)))
  assert scale > 0.1
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_folded_batch_norm_matches_the_reference_and_the_unfolded_net(
    fake_sd, fake_params):
  rng = np.random.default_rng(7)
  x = rng.uniform(-1, 1, (2, 11, 9, 3))
  want = _ref_basic_conv(x, fake_sd, 'Conv2d_1a_3x3', stride=2)
  got = inception.BasicConv2d(32, (3, 3), 2, (0, 0), fold_bn=True).apply(
      {'params': fake_params['Conv2d_1a_3x3']}, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Same params tree as the unfolded layer's.
  folded = inception.BasicConv2d(32, (3, 3), 2, (0, 0), fold_bn=True).init(
      jax.random.key(0), jnp.zeros((1, 11, 9, 3)))['params']
  assert _shapes(folded) == _shapes(fake_params['Conv2d_1a_3x3'])
  # The whole network, float32, at its smallest input.
  x = jnp.asarray(rng.uniform(-1, 1, (1, 75, 75, 3)), jnp.float32)
  plain = inception.FIDInceptionV3().apply({'params': fake_params}, x)
  fold = inception.FIDInceptionV3(fold_bn=True).apply(
      {'params': fake_params}, x)
  assert float(jnp.max(plain)) > 0.1  # features that are not all ~0
  np.testing.assert_allclose(fold, plain, rtol=1e-4, atol=1e-5)


def test_fid_features_shape_and_batching(fake_params):
  rng = np.random.default_rng(6)
  imgs = rng.uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
  # Batches of 2: one full batch and one padded one, one compiled program.
  feats = inception.fid_features(fake_params, imgs, batch_size=2)
  assert feats.shape == (3, 2048) and feats.dtype == np.float32
  assert np.all(np.isfinite(feats)) and np.all(feats >= 0)
  again = inception.fid_features(fake_params, imgs[1:], batch_size=2)
  np.testing.assert_allclose(again, feats[1:], rtol=1e-5, atol=1e-4)
  # numpy weights (as converted) go to the device once, explicitly, not
  # implicitly with every batch's call.
  assert isinstance(jax.tree.leaves(fake_params)[0], np.ndarray)
  with jax.transfer_guard_host_to_device('disallow'):
    guarded = inception.fid_features(fake_params, imgs, batch_size=2)
  np.testing.assert_array_equal(guarded, feats)


# --- Parity with PyTorch (skipped without torch) -----------------------------


def _torch_fid_inception(torch):
  """pytorch-fid's `fid_inception_v3()` network in plain torch.nn."""
  nn = torch.nn
  F = torch.nn.functional

  class BasicConv2d(nn.Module):

    def __init__(self, cin, cout, **kw):
      super().__init__()
      self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
      self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
      return F.relu(self.bn(self.conv(x)))

  def avg(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1,
                        count_include_pad=False)

  class A(nn.Module):

    def __init__(self, cin, pool_features):
      super().__init__()
      self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
      self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
      self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
      self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
      self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
      return torch.cat([
          self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
          self.branch_pool(avg(x))], 1)

  class B(nn.Module):

    def __init__(self, cin):
      super().__init__()
      self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
      self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
      self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
      return torch.cat([
          self.branch3x3(x),
          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
          F.max_pool2d(x, kernel_size=3, stride=2)], 1)

  class C(nn.Module):

    def __init__(self, cin, c7):
      super().__init__()
      self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
      self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7),
                                     padding=(0, 3))
      self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1),
                                     padding=(3, 0))
      self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
      self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1),
                                        padding=(3, 0))
      self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7),
                                        padding=(0, 3))
      self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1),
                                        padding=(3, 0))
      self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7),
                                        padding=(0, 3))
      self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
      b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
      d = x
      for i in range(1, 6):
        d = getattr(self, f'branch7x7dbl_{i}')(d)
      return torch.cat([self.branch1x1(x), b7, d,
                        self.branch_pool(avg(x))], 1)

  class D(nn.Module):

    def __init__(self, cin):
      super().__init__()
      self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
      self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
      self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7),
                                       padding=(0, 3))
      self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1),
                                       padding=(3, 0))
      self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
      d = x
      for i in range(1, 5):
        d = getattr(self, f'branch7x7x3_{i}')(d)
      return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), d,
                        F.max_pool2d(x, kernel_size=3, stride=2)], 1)

  class E(nn.Module):

    def __init__(self, cin, max_pool):
      super().__init__()
      self.max_pool = max_pool
      self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
      self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
      self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3),
                                      padding=(0, 1))
      self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1),
                                      padding=(1, 0))
      self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
      self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
      self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3),
                                         padding=(0, 1))
      self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1),
                                         padding=(1, 0))
      self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
      b3 = self.branch3x3_1(x)
      d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
      if self.max_pool:  # FIDInceptionE_2
        pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
      else:  # FIDInceptionE_1
        pool = avg(x)
      return torch.cat([
          self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
          self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3),
          self.branch_pool(pool)], 1)

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
      self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
      self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
      self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
      self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
      self.Mixed_5b = A(192, 32)
      self.Mixed_5c = A(256, 64)
      self.Mixed_5d = A(288, 64)
      self.Mixed_6a = B(288)
      self.Mixed_6b = C(768, 128)
      self.Mixed_6c = C(768, 160)
      self.Mixed_6d = C(768, 160)
      self.Mixed_6e = C(768, 192)
      self.Mixed_7a = D(768)
      self.Mixed_7b = E(1280, max_pool=False)
      self.Mixed_7c = E(2048, max_pool=True)
      self.fc = nn.Linear(2048, 1008)

    def forward(self, x):
      # pytorch-fid's InceptionV3(resize_input=True, normalize_input=True),
      # output block 3.
      x = F.interpolate(x, size=(299, 299), mode='bilinear',
                        align_corners=False)
      x = 2 * x - 1
      x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
      x = F.max_pool2d(x, kernel_size=3, stride=2)
      x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
      x = F.max_pool2d(x, kernel_size=3, stride=2)
      for name in ('5b', '5c', '5d', '6a', '6b', '6c', '6d', '6e', '7a', '7b',
                   '7c'):
        x = getattr(self, f'Mixed_{name}')(x)
      return F.adaptive_avg_pool2d(x, (1, 1))[:, :, 0, 0]

  return Net()


def test_parity_with_pytorch(tmp_path, fake_sd):
  torch = pytest.importorskip('torch')
  net = _torch_fid_inception(torch).eval()
  sd = {k: torch.from_numpy(np.array(v)) for k, v in fake_sd.items()}
  net.load_state_dict(sd, strict=True)  # our key list is pytorch-fid's
  path = str(tmp_path / 'pt_inception-test.pth')
  torch.save(net.state_dict(), path)
  params = weights.load('inception_fid', path)

  rng = np.random.default_rng(7)
  imgs = rng.uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    want = net(x).numpy()
    resized = torch.nn.functional.interpolate(
        x, size=(299, 299), mode='bilinear', align_corners=False)
  got_resize = inception.resize_bilinear(jnp.asarray(imgs), (299, 299))
  np.testing.assert_allclose(got_resize,
                             resized.permute(0, 2, 3, 1).numpy(),
                             rtol=0, atol=3e-6)
  print('parity: resize max abs diff', np.abs(
      np.asarray(got_resize) - resized.permute(0, 2, 3, 1).numpy()).max())
  got = inception.fid_features(params, imgs, batch_size=2)
  assert got.shape == want.shape == (2, 2048)
  scale = np.abs(want).max()
  print('parity: max abs diff', np.abs(got - want).max(), 'max |feature|',
        scale, 'max abs diff / max |feature|',
        np.abs(got - want).max() / scale)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
