"""Tests for LPIPS (medjax.models.lpips, medjax.metrics.lpips).

Checkpoints with the real key names and shapes are written with `torchfiles`
(no torch). Where torch is installed, a minimal torch LPIPS written here (no
torchvision, no lpips package) checks parity end to end.
"""

import collections
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import weights
from medjax.metrics import lpips
from medjax.models import lpips as lpips_net
from torchfiles import save_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# torchvision `features` layout: index -> (out, in, kernel) of each conv.
_TORCH_CONVS = {
    'alex': {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3),
             8: (256, 384, 3), 10: (256, 256, 3)},
    'vgg': {idx: (lpips_net._VGG16_FEATURES[int(name[4])], None, 3)
            for name, idx in lpips_net.vgg16_torch_indices().items()},
}


def _conv_shapes(net):
  out, cin = {}, 3
  for idx, (cout, _, k) in _TORCH_CONVS[net].items():
    out[idx] = (cout, cin, k)
    cin = cout
  return out


def _fake_backbone(net, seed=0):
  """Random values with torchvision's real key names and shapes."""
  rng = np.random.default_rng(seed)
  sd = collections.OrderedDict()
  for idx, (cout, cin, k) in _conv_shapes(net).items():
    std = np.sqrt(2.0 / (k * k * cin))
    sd[f'features.{idx}.weight'] = (
        rng.standard_normal((cout, cin, k, k), np.float32) * std)
    sd[f'features.{idx}.bias'] = rng.standard_normal(cout, np.float32) * 0.1
  sd['classifier.1.weight'] = np.zeros((8, 4), np.float32)  # ignored
  return sd


def _fake_lin(net, seed=1):
  """lpips v0.1 layout: `lin{l}.model.1.weight`, (1, C, 1, 1), >= 0."""
  rng = np.random.default_rng(seed)
  return collections.OrderedDict(
      (f'lin{l}.model.1.weight',
       np.abs(rng.standard_normal((1, c, 1, 1), np.float32)) / c)
      for l, c in enumerate(lpips_net.CHANNELS[net]))


def _write(tmp_path, net):
  """Writes both fake files, converts them, returns the two directories."""
  backbone_kind, lin_kind = lpips.KINDS[net]
  dirs = []
  for kind, sd in ((backbone_kind, _fake_backbone(net)),
                   (lin_kind, _fake_lin(net))):
    src = str(tmp_path / f'{kind}.pth')
    save_state_dict(sd, src)
    out = str(tmp_path / kind)
    info = weights.convert(kind, src, out)
    assert info['kind'] == kind
    dirs.append(out)
  return dirs


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_converted_weights_load_and_behave(tmp_path, net):
  backbone_dir, lin_dir = _write(tmp_path, net)
  metric = lpips.LPIPS(net, backbone_weights=backbone_dir, lin_weights=lin_dir)
  shapes = jax.eval_shape(
      lambda k: lpips_net.LPIPSNet(net=net).init(
          k, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3))),
      jax.random.key(0))['params']
  assert jax.tree.map(lambda a: a.shape, metric.params) == jax.tree.map(
      lambda a: a.shape, shapes)

  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
  np.testing.assert_array_equal(metric(x, x), np.zeros(3, np.float32))
  d_xy, d_yx = np.asarray(metric(x, y)), np.asarray(metric(y, x))
  assert d_xy.shape == (3,)
  np.testing.assert_allclose(d_xy, d_yx, rtol=1e-6)
  assert np.all(d_xy > 0)
  # Grayscale policy: one channel equals the same image repeated to RGB.
  np.testing.assert_allclose(
      metric(np.repeat(x, 3, -1), np.repeat(y, 3, -1)), d_xy, rtol=1e-6)


def _np_conv(x, w, b, stride, pad):
  """PyTorch Conv2d on NHWC numpy (cross-correlation), float64."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  k = w.shape[-1]
  ho = (x.shape[1] - k) // stride + 1
  wo = (x.shape[2] - k) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, w.shape[0]))
  for i in range(k):
    for j in range(k):
      patch = x[:, i:i + stride * (ho - 1) + 1:stride,
                j:j + stride * (wo - 1) + 1:stride]
      out += patch @ w[:, :, i, j].T.astype(np.float64)
  return out + b


def test_formula_matches_numpy_reference():
  # Backbone taps from the module; scaling, normalisation, squared difference,
  # linear layer, spatial mean and layer sum in numpy; the first tap (conv
  # 11x11, stride 4, pad 2) checked against a numpy convolution.
  net = 'alex'
  sd, lin_sd = _fake_backbone(net, seed=3), _fake_lin(net, seed=4)
  params = {'backbone': lpips_net.convert_alexnet(sd),
            'lin': lpips_net.convert_lin(lin_sd, net)}
  metric = lpips.LPIPS(net, params=params)
  rng = np.random.default_rng(5)
  a = rng.uniform(-1, 1, (2, 40, 36, 3)).astype(np.float32)
  b = rng.uniform(-1, 1, (2, 40, 36, 3)).astype(np.float32)

  model = lpips_net.LPIPSNet(net=net)
  feats = [[np.asarray(f, np.float64) for f in model.apply(
      {'params': metric.params}, x, method='features')] for x in (a, b)]
  scaled = (a.astype(np.float64) - lpips_net.SHIFT) / lpips_net.SCALE
  relu1 = np.maximum(_np_conv(scaled, sd['features.0.weight'],
                              sd['features.0.bias'], 4, 2), 0)
  np.testing.assert_allclose(feats[0][0], relu1, rtol=1e-4, atol=1e-4)

  want = np.zeros(2)
  for l, (fa, fb) in enumerate(zip(*feats)):
    na = fa / (np.sqrt((fa ** 2).sum(-1, keepdims=True)) + 1e-10)
    nb = fb / (np.sqrt((fb ** 2).sum(-1, keepdims=True)) + 1e-10)
    w = lin_sd[f'lin{l}.model.1.weight'].reshape(-1).astype(np.float64)
    want += (((na - nb) ** 2) @ w).mean(axis=(1, 2))
  np.testing.assert_allclose(metric(a, b), want, rtol=1e-5)


def test_converter_errors():
  sd = _fake_backbone('alex')
  del sd['features.8.bias']
  with pytest.raises(KeyError, match='features.8.bias'):
    lpips_net.convert_alexnet(sd)
  sd = _fake_backbone('alex')
  sd['features.3.weight'] = sd['features.3.weight'][:, :, :3, :3]
  with pytest.raises(ValueError, match='features.3.weight'):
    lpips_net.convert_alexnet(sd)
  with pytest.raises(ValueError, match=r'\(1, 128, 1, 1\)'):
    lpips_net.convert_lin(_fake_lin('alex'), 'vgg')
  with pytest.raises(KeyError, match='lin0.model.1.weight'):
    lpips_net.convert_lin({'x': np.zeros(3)}, 'alex')


def test_missing_weights_message(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    lpips.LPIPS('alex', backbone_weights=str(tmp_path / 'nowhere'),
                lin_weights=str(tmp_path / 'nowhere'))
  msg = str(e.value)
  assert 'alexnet-owt-7be5be79.pth' in msg
  assert 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth' in msg
  assert 'python -m medjax.weights convert --kind=alexnet' in msg
  with pytest.raises(FileNotFoundError, match='--kind=lpips_vgg'):
    weights.require('lpips_vgg', None)
  with pytest.raises(FileNotFoundError, match='vgg16-397923af.pth'):
    lpips.LPIPS('vgg', backbone_weights=None, lin_weights=None)


def test_input_checks():
  metric = lpips.LPIPS.random_weights('alex')
  with pytest.raises(ValueError, match='at least 31x31'):
    metric(np.zeros((1, 30, 30, 3)), np.zeros((1, 30, 30, 3)))
  with pytest.raises(ValueError, match='1 or 3 channels'):
    metric(np.zeros((1, 32, 32, 2)), np.zeros((1, 32, 32, 2)))
  with pytest.raises(ValueError, match='one shape'):
    metric(np.zeros((1, 32, 32, 3)), np.zeros((2, 32, 32, 3)))


def test_convert_command(tmp_path):
  src = str(tmp_path / 'vgg.pth')
  save_state_dict(_fake_lin('vgg'), src, legacy=True)
  out = str(tmp_path / 'lpips_vgg')
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.weights', 'convert', '--kind=lpips_vgg',
       f'--src={src}', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  got = weights.load('lpips_vgg', out)
  want = lpips_net.convert_lin(_fake_lin('vgg'), 'vgg')
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])


# --- Parity with a torch LPIPS (skipped without torch) -----------------------


def _torch_lpips(torch, net):
  """A minimal torch LPIPS: torchvision's layer indices, lpips' lin names."""
  nn = torch.nn
  layers = []
  if net == 'alex':
    layers = [nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
              nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
              nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
              nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
              nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()]
    taps = (1, 4, 7, 9, 11)
  else:
    cin = 3
    for v in (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512,
              'M', 512, 512, 512):
      if v == 'M':
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
        cin = v
    taps = (3, 8, 15, 22, 29)

  class Lin(nn.Module):

    def __init__(self, c):
      super().__init__()
      self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))

  class Backbone(nn.Module):

    def __init__(self):
      super().__init__()
      self.features = nn.Sequential(*layers)

  class Heads(nn.Module):

    def __init__(self):
      super().__init__()
      for l, c in enumerate(lpips_net.CHANNELS[net]):
        setattr(self, f'lin{l}', Lin(c))

  backbone, heads = Backbone().eval(), Heads().eval()
  shift = torch.tensor(lpips_net.SHIFT).view(1, 3, 1, 1)
  scale = torch.tensor(lpips_net.SCALE).view(1, 3, 1, 1)

  def feats(x):
    out, h = [], (x - shift) / scale
    for i, layer in enumerate(backbone.features):
      h = layer(h)
      if i in taps:
        out.append(h)
    return out

  def norm(f):
    return f / (torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True)) + 1e-10)

  def distance(a, b):
    val = 0
    for l, (fa, fb) in enumerate(zip(feats(a), feats(b))):
      d = (norm(fa) - norm(fb)) ** 2
      val = val + getattr(heads, f'lin{l}').model(d).mean([2, 3])
    return val.reshape(-1)

  return backbone, heads, distance


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_parity_with_torch(tmp_path, net):
  torch = pytest.importorskip('torch')
  torch.manual_seed(0)
  backbone, heads, distance = _torch_lpips(torch, net)
  with torch.no_grad():
    for l in range(5):
      w = getattr(heads, f'lin{l}').model[1].weight
      w.copy_(w.abs())  # published lin weights are non-negative
  backbone_kind, lin_kind = lpips.KINDS[net]
  torch.save(backbone.state_dict(), str(tmp_path / 'backbone.pth'))
  torch.save(heads.state_dict(), str(tmp_path / 'lin.pth'))
  weights.convert(backbone_kind, str(tmp_path / 'backbone.pth'),
                  str(tmp_path / 'backbone'))
  weights.convert(lin_kind, str(tmp_path / 'lin.pth'), str(tmp_path / 'lin'))
  metric = lpips.LPIPS(net, backbone_weights=str(tmp_path / 'backbone'),
                       lin_weights=str(tmp_path / 'lin'))

  rng = np.random.default_rng(0)
  a = rng.uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.5, a.shape), -1, 1).astype(np.float32)
  with torch.no_grad():
    want = distance(torch.from_numpy(a.transpose(0, 3, 1, 2)),
                    torch.from_numpy(b.transpose(0, 3, 1, 2))).numpy()
  got = np.asarray(metric(a, b))
  print(f'LPIPS-{net} parity: max abs {np.abs(got - want).max():.2e}, '
        f'max rel {np.abs(got / want - 1).max():.2e}, values {want}')
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
