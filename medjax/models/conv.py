"""A drop-in `conv_general_dilated` with faster gradients on CPU and GPU.

XLA:CPU computes a convolution's weight gradient as a convolution whose
"kernel" is the whole feature map. For transposed (input-dilated)
convolutions, and stride-1 ones on large maps, that runs far slower than the
forward pass (2026-11-25, jax 0.10: 1.4 s vs 0.06 s for DCGAN's 8->16
deconvolution at batch 64; 2026-11-26: 2.4-3x slower than the form below for
3x3 convolutions at 96x96). The same gradient is a sum of k*k matrix
products, one per kernel tap:

  forward conv (stride s):       dW[i, j] = sum_{b,h,w} x_pad[b, s*h + i, s*w + j]^T dy[b, h, w]
  transposed conv (dilation d):  dW[i, j] = sum_{b,m,n} x[b, m, n]^T dy_pad[b, d*m + pl - i, d*n + pl - j]

The value is the same up to float summation order. Three more equivalent
forms:

* a transposed convolution with >= 8 output channels is computed as s*s
  stride-1 convolutions of the undilated input with k/s x k/s sub-kernels,
  interleaved (`_transposed_as_phases`; no multiplications by inserted
  zeros, ~2x faster forward);
* the input gradient of a strided convolution (k divisible by s) is taken
  through its space-to-depth form (`_strided_as_stride1`), a stride-1
  convolution, instead of XLA's input-dilated one (~2x faster);
* (CPU only) a convolution without padding (1x1 ones, VALID ones) is
  computed with its bottom padded by one stride and the extra output row
  dropped: XLA:CPU runs unpadded convolutions up to 3x slower than padded
  ones (InceptionV3 at batch 16: 3.4 s -> 2.0 s per forward).

The forms cost compile time and memory (each tap materialises a slice), so a
convolution takes them only where they win (`_form_applies`), which on CPU
depends on the library XLA:CPU convolves with (`medjax.CPU_CONVOLUTIONS`).
With Eigen's, medjax's default on x86-64 since 2026-12-07 (the 'eigen'
rule): transposed ones and strided ones with k divisible by s only; there
XLA's own stride-1 weight gradient is 2.3-4.8x faster than the k*k matmuls
and unpadded convolutions 10-25% faster than padded ones (bench/NOTES.md).
With YNNPACK's (the 'cpu' rule) also stride-1 ones with an output of at
least TAPS_MIN_AREA pixels and no fewer output than input channels, and the
padding of unpadded ones below. DCGAN train step, batch 128, float32, 2-core
CPU: 4.2-4.8 s -> 3.4 s per step with the forms (2026-11-25), 2.1-2.2 s
with Eigen's convolutions (docs/benchmarks.md).

On GPU (`forms_rule` 'gpu') only transposed and strided (k divisible by s)
convolutions take the forms: on an H200 (2026-11-26) they made DCGAN's
float32 step 1.7x faster at batch 128 and 2.1x at 1024 (bfloat16 the same),
while the stride-1 weight gradient made SRGAN's step 14-37% slower. On TPU
and for grouped, kernel-dilated, non-NHWC or negatively padded convolutions
it is plain `lax.conv_general_dilated`. Pass it to Flax as `nn.Conv(...,
conv_general_dilated=conv.conv_general_dilated)`.

The environment variable MEDJAX_CONV_FORMS, read when a function is traced,
overrides the backend rule for timing: 'on' uses the YNNPACK CPU rule
('cpu') on every backend, 'eigen' the Eigen one, 'off' plain lax everywhere
('auto', the default: the backend's rule). bench/train_step.py's
--conv_forms sets it.

'cudnn' (opt-in, for GPUs; untimed yet) is the 'gpu' rule but for
transposed convolutions, which it runs on the cuDNN calls PyTorch's
ConvTranspose2d runs on. One with input dilation s and padding 0 <= P <=
k-1 is the input gradient, the adjoint, of the stride-s convolution padded
by k-1-P with the kernel flipped in space and I and O swapped
(`_adjoint_padding`): its forward is that convolution's backward-data call,
its dx the strided convolution, its dW the strided convolution's
backward-filter call (the discriminator's own problems) unless the kernel
outweighs the maps (`_maps_outweigh_kernel`), with no phases, taps or
slices. (Strided convolutions keep the space-to-depth dx: XLA makes
a strided dx cuDNN's backward-data call only while the kernel it reads is
still a `rev`; for SNGAN's spectrally normalised float32 kernels it was
not, and the dx became a convolution of the zero-dilated gradient, s*s the
FLOPs.) H200 programs compiled without a GPU (bench/NOTES.md, 2026-12-06):
DCGAN's step bound 1.51 -> 1.23 ms at batch 128 in float32 (launches 97 ->
89), 6.26 -> 4.67 ms at batch 1024 in bfloat16, 12.1 -> 8.82 in float32.
'cudnn_dw' takes only the adjoint's dW, keeping the phase forward: every
cuDNN call in it is of a kind the H200 has timed in medjax's DCGAN step
(bound 6.26 -> 5.28 ms at batch 1024 in bfloat16), the fallback should
cuDNN's backward-data call for the forward turn out slow.

'gemm' (opt-in, for GPUs; untimed yet) computes each convolution whose
patches fit GEMM_MAX_BYTES (MEDJAX_CONV_GEMM_MB) as one matrix product of
its patches (`_gemm_conv`) and the rest by the 'gpu' rule. XLA keeps cuDNN
convolutions out of its CUDA graphs, so the launch-bound paper-batch steps
pay one host launch per convolution and per run of kernels between them;
Triton GEMMs are graphed with their neighbours (H100 program, compiled
without a GPU: SRGAN batch 16 float32 438 -> 144 launches, DCGAN batch 128
97 -> 60), at the price of writing the patches out (bench/NOTES.md).
"""

import functools
import os
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp

import medjax

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
  if ndim != 4 or dimension_numbers is None:
    return False
  dn = lax.conv_dimension_numbers((1,) * 4, (1,) * 4, dimension_numbers)
  return dn == lax.conv_dimension_numbers((1,) * 4, (1,) * 4, _NHWC)


FORMS = ('auto', 'on', 'off', 'eigen', 'gemm', 'cudnn', 'cudnn_dw')
# The rules `forms_rule` gives for GPUs ('auto' there, or forced).
GPU_RULES = ('gpu', 'gemm', 'cudnn', 'cudnn_dw')


def forms_rule() -> str | None:
  """Which convolutions take the forms above, from MEDJAX_CONV_FORMS.

  Returns:
    'cpu': every convolution where a form beats XLA:CPU's YNNPACK
    convolutions (`_form_applies`), and unpadded ones padded by a stride;
    'eigen': transposed and strided (k divisible by s) ones only, the forms
    that beat XLA:CPU's Eigen convolutions, with the CPU's float32 weight
    gradients; 'gpu': the same convolutions; None: none (plain `lax`).
    'auto' picks the rule of the default backend: on CPU 'eigen' or 'cpu'
    as `medjax.CPU_CONVOLUTIONS` says XLA runs them (None on TPU, where
    nothing is timed); 'on' the 'cpu' rule on any backend, 'off' None;
    'gemm' (`MEDJAX_CONV_FORMS=gemm`): every convolution whose patches fit
    GEMM_MAX_BYTES as a matrix product (`_gemm_conv`), the rest as 'gpu';
    'cudnn' (`MEDJAX_CONV_FORMS=cudnn`): 'gpu', but transposed convolutions
    as the adjoint of a strided one (`_adjoint_padding`); 'cudnn_dw': 'gpu',
    but their weight gradients as the adjoint's.
  """
  choice = os.environ.get('MEDJAX_CONV_FORMS', 'auto')
  if choice not in FORMS:
    raise ValueError(f'MEDJAX_CONV_FORMS={choice!r}, expected one of {FORMS}')
  if choice == 'auto':
    backend = jax.default_backend()
    if backend == 'cpu':
      return 'cpu' if medjax.CPU_CONVOLUTIONS == 'ynn' else 'eigen'
    return 'gpu' if backend == 'gpu' else None
  return {'on': 'cpu', 'off': None}.get(choice, choice)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, with the forms above where `forms_rule`
  says they win."""
  strides = tuple(window_strides)
  lhs_dil = tuple(lhs_dilation or (1,) * len(strides))
  rule = forms_rule()
  fast = (rule is not None
          and _is_nhwc(dimension_numbers, lhs.ndim)
          and feature_group_count == 1 and batch_group_count == 1
          and all(d == 1 for d in (rhs_dilation or (1, 1)))
          and (all(s == 1 for s in strides) or all(d == 1 for d in lhs_dil))
          and preferred_element_type is None)
  if fast and isinstance(padding, str):
    if any(d > 1 for d in lhs_dil):
      fast = False
    else:
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides,
                                    padding)
  if fast:
    padding = tuple(tuple(int(p) for p in pair) for pair in padding)
    fast = all(p >= 0 for pair in padding for p in pair)
  if fast and rule == 'cpu' and not any(
      p for pair in padding for p in pair) and all(d == 1 for d in lhs_dil):
    # XLA:CPU's YNNPACK runs a convolution without padding up to 3x slower
    # than the same one padded (bench/NOTES.md, 2026-11-26: InceptionV3's 1x1
    # and VALID 3x3 ones): pad the bottom by one stride, drop the extra row.
    # (Eigen's runs it 10-25% faster unpadded: not under 'eigen'.)
    return conv_general_dilated(
        lhs, rhs, strides, ((0, strides[0]), (0, 0)),
        dimension_numbers=dimension_numbers, precision=precision)[:, :-1]
  if fast and rule == 'gemm':
    y = _gemm_conv(lhs, rhs, strides, padding, lhs_dil, precision)
    if y is not None:
      return y
    rule = 'gpu'  # Patches too large: cuDNN's convolution.
  if not fast or not _form_applies(lhs.shape, rhs.shape, strides, padding,
                                   lhs_dil, rule):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  return _conv(lhs, rhs, strides, padding, lhs_dil, precision)


# Under the 'cpu' rule (YNNPACK convolutions) stride-1 convolutions take the
# k*k-matmul weight gradient only when their output has at least this many
# pixels and no fewer channels than their input (measured 2026-11-26,
# docs/benchmarks.md: XLA:CPU's own was 2.4-3x slower at 96x96 and 1.0-1.7x
# at 48x48, but up to 1.4x faster at 24x24 and for thin outputs).
TAPS_MIN_AREA = 48 * 48


def _form_applies(x_shape, w_shape, strides, padding, lhs_dil,
                  rule: str = 'cpu') -> bool:
  """Whether one of the forms above beats XLA for this convolution under
  `rule` ('cpu', 'gpu', 'cudnn' or 'cudnn_dw', see `forms_rule`); elsewhere
  plain `lax` is as fast, compiles faster and needs less memory."""
  kh, kw, cin, cout = w_shape
  if any(d > 1 for d in lhs_dil):
    # Transposed: phases forward, k*k-matmul weight gradient (under 'cudnn'
    # the adjoint's calls where there is one, under 'cudnn_dw' its dW).
    return True
  if any(s > 1 for s in strides):
    return not kh % strides[0] and not kw % strides[1]  # Space-to-depth dx.
  if rule in GPU_RULES or rule == 'eigen':  # 'gemm' passes 'gpu' here.
    # H200, 2026-11-26: all forms on made SRGAN's step (stride-1 ones) 14%
    # slower in float32 and 37% in bfloat16; XLA:CPU with Eigen's
    # convolutions, 2026-12-07: XLA's dW 2.3-4.8x faster (bench/NOTES.md).
    return False
  (pt, pb), (pl, pr) = padding
  area = (x_shape[1] + pt + pb - kh + 1) * (x_shape[2] + pl + pr - kw + 1)
  return cout >= cin and area >= TAPS_MIN_AREA


# The 'gemm' rule's bound on a convolution's patches (B * H' * W' * kh*kw*I
# elements): each costs ~6 passes over memory per step (written, read; again
# when recomputed for dW; dx's patches summed back), which must stay under
# what the convolution's three cuDNN launches cost the host (~40 us on the
# H200, bench/NOTES.md: ~190 MB at 4.8 TB/s). MEDJAX_CONV_GEMM_MB overrides.
GEMM_MAX_BYTES = 32 << 20


def gemm_max_bytes() -> int:
  """The 'gemm' rule's bound on a convolution's patches, in bytes:
  MEDJAX_CONV_GEMM_MB (read when tracing) or GEMM_MAX_BYTES."""
  mb = os.environ.get('MEDJAX_CONV_GEMM_MB')
  return GEMM_MAX_BYTES if mb is None else int(float(mb) * (1 << 20))


def _gemm_conv(x, w, strides, padding, lhs_dil, precision):
  """The convolution as matrix products of its patches (or None).

  XLA's GPU runtime keeps cuDNN convolutions out of its CUDA graphs, so a
  step of small convolutions is one host launch per convolution and per
  kernel between them (bench/NOTES.md: SRGAN at batch 16 is launch-bound).
  As patches (k*k shifted slices side by side) times the (k*k*I, O) kernel,
  a convolution is a dot XLA emits as a Triton GEMM, inside the graphs;
  autodiff gives dots and slices for dW and dx. Transposed convolutions go
  through their phases (`_transposed_as_phases`), each a stride-1 product.

  Returns:
    The output, or None where the patches exceed the 'gemm' bound or the
    phases do not apply.
  """
  kh, kw, cin, _ = w.shape
  b, h, wd, _ = x.shape
  (pt, pb), (pl, pr) = padding
  if any(d > 1 for d in lhs_dil):
    rows = _phases(h, kh, lhs_dil[0], pt, pb)
    cols = _phases(wd, kw, lhs_dil[1], pl, pr)
    if rows is None or cols is None:
      return None
    taps = rows[1][0][1] * cols[1][0][1]
    area = rows[0] * lhs_dil[0] * cols[0] * lhs_dil[1]
  else:
    oh, ow = _output_hw(x.shape, w.shape, strides, padding)
    if oh < 1 or ow < 1:
      return None
    taps, area = kh * kw, oh * ow
  if b * area * taps * cin * x.dtype.itemsize > gemm_max_bytes():
    return None
  if any(d > 1 for d in lhs_dil):
    return _transposed_as_phases(x, w, lhs_dil, padding, precision,
                                 stride1=_gemm_valid)
  return _gemm(x, w, strides, padding, precision)


# Recomputed in the backward pass rather than kept: the patches are k*k
# times the input.
@functools.partial(jax.checkpoint, static_argnums=(2, 3, 4))
def _gemm(x, w, strides, padding, precision):
  """NHWC/HWIO convolution (non-negative padding) as patches @ kernel."""
  kh, kw, cin, cout = w.shape
  (pt, pb), (pl, pr) = padding
  out_hw = _output_hw(x.shape, w.shape, strides, padding)
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
  taps = [_window(xp, (i, j), out_hw, strides)
          for i in range(kh) for j in range(kw)]
  patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=3)
  w = w.reshape(kh * kw * cin, cout)
  if cout == 1:
    # jax 0.10.2's XLA fails a check in its Triton GEMM tiling on some
    # one-column products (a transposed convolution's phases at batch >= 64,
    # H100 target): a float32 multiply-and-sum instead.
    return jnp.sum(patches.astype(jnp.float32) * w[:, 0].astype(jnp.float32),
                   axis=3, keepdims=True).astype(x.dtype)
  return lax.dot_general(patches, w, (((3,), (0,)), ((), ())),
                         precision=precision)


def _gemm_valid(x, w, precision):
  return _gemm(x, w, (1, 1), ((0, 0), (0, 0)), precision)


def _stride1(x, w, precision):
  """A VALID stride-1 convolution (plain XLA)."""
  return _lax_conv(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1), precision)


def _strided_as_stride1(x, w, strides, padding, precision):
  """Stride-s convolution as space-to-depth + a stride-1 one (or None).

  With k divisible by s, y = conv_s(x, w) equals a stride-1 convolution of
  the s x s blocks of the padded input (s*s*I channels) with w regrouped to
  (k/s, k/s, s*s*I, O). XLA:CPU's input gradient of a strided convolution
  is an input-dilated convolution, 3-4x slower than this form's.
  """
  kh, kw, cin, cout = w.shape
  sh, sw = strides
  if kh % sh or kw % sw:
    return None
  b, h, wd, _ = x.shape
  (pt, _), (pl, _) = padding
  oh, ow = _output_hw(x.shape, w.shape, strides, padding)
  if oh < 1 or ow < 1:
    return None
  # Pad, then keep exactly the rows/columns the strided windows read.
  hn, wn = (oh - 1) * sh + kh, (ow - 1) * sw + kw
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), (pt, hn - h - pt, 0), (pl, wn - wd - pl, 0),
               (0, 0, 0)))
  x = x.reshape(b, hn // sh, sh, wn // sw, sw, cin).transpose(
      0, 1, 3, 2, 4, 5).reshape(b, hn // sh, wn // sw, sh * sw * cin)
  w = w.reshape(kh // sh, sh, kw // sw, sw, cin, cout).transpose(
      0, 2, 1, 3, 4, 5).reshape(kh // sh, kw // sw, sh * sw * cin, cout)
  return _stride1(x, w, precision)


def _phases(size: int, k: int, s: int, lo: int, hi: int):
  """Per output phase a: (first tap r, taps L, input offset c), or None.

  Output o = s*m + a of the input-dilated convolution reads taps
  t = r + s*u (u < L) at input m + u + c; None unless every phase has the
  same L and the output size divides by s (then they interleave exactly).
  """
  out = (size - 1) * s + 1 + lo + hi - k + 1
  if out < s or out % s:
    return None
  phases = []
  for a in range(s):
    r = (lo - a) % s
    taps = -(-(k - r) // s) if r < k else 0
    phases.append((r, taps, (a + r - lo) // s))
  if len({t for _, t, _ in phases}) != 1 or not phases[0][1]:
    return None
  return out // s, phases


def _transposed_as_phases(x, w, lhs_dil, padding, precision,
                          stride1=_stride1):
  """Input-dilated (transposed) convolution as s*s stride-1 ones (or None).

  Output pixel (s*m + a, s*n + b) only meets the kernel taps congruent to a
  phase-dependent offset mod s: each of the s*s output phases is a stride-1
  convolution of the undilated input with a (k/s x k/s) sub-kernel, and the
  phases interleave into the output (depth-to-space). Same values, s*s
  times fewer multiplications by inserted zeros; XLA:CPU runs it 2-4x faster
  than the dilated form. `stride1(x, w, precision)` computes each phase's
  VALID stride-1 convolution (plain XLA, or `_gemm_valid`).
  """
  kh, kw, _, cout = w.shape
  b, h, wd, _ = x.shape
  (pt, pb), (pl, pr) = padding
  sh, sw = lhs_dil
  rows = _phases(h, kh, sh, pt, pb)
  cols = _phases(wd, kw, sw, pl, pr)
  if rows is None or cols is None:
    return None
  (mh, ph), (mw, pw) = rows, cols
  out = []
  for rh, th, ch in ph:
    row = []
    for rw, tw, cw in pw:
      xa = lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (-ch, mh - 1 + th - h + ch, 0),
                    (-cw, mw - 1 + tw - wd + cw, 0), (0, 0, 0)))
      row.append(stride1(xa, w[rh::sh][:th, rw::sw][:, :tw], precision))
    out.append(jnp.stack(row, axis=3))  # (B, mh, mw, sw, O)
  y = jnp.stack(out, axis=3)  # (B, mh, mw, sh, sw, O)
  return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, mh * sh, mw * sw, cout)


def _adjoint_padding(w_shape, strides, padding, lhs_dil):
  """The padding of the strided convolution whose adjoint (input gradient)
  is this transposed one, or None where there is none.

  A convolution of the input dilated by s and padded by P (0 <= P <= k-1)
  with kernel w is the adjoint of the stride-s convolution padded by k-1-P
  with w flipped in space and its I/O swapped (`_adjoint_kernel`): the
  stride-s convolution maps the output size, (H-1)*s + 1 + P_lo + P_hi - k
  + 1, back to exactly H.
  """
  if not any(d > 1 for d in lhs_dil) or any(s != 1 for s in strides):
    return None
  pads = tuple((k - 1 - lo, k - 1 - hi)
               for k, (lo, hi) in zip(w_shape[:2], padding))
  if any(p < 0 or p > k - 1 for k, pair in zip(w_shape[:2], pads)
         for p in pair):
    return None
  return pads


def _maps_outweigh_kernel(x_shape, w_shape) -> bool:
  """Whether a transposed convolution's k*k-tap weight gradient moves more
  bytes than its adjoint's backward-filter call ('cudnn', 'cudnn_dw').

  The taps read the maps once per tap, ~k*k * B*H*W*(I+O) elements; the
  adjoint reads them once, but cuDNN writes its filter gradient in its own
  layout, which XLA transposes back through the weights and both Adam
  moments, ~6 * k*k * I*O. (Pix2Pix at batch 1, 512-1024 channels on 1x1 to
  8x8 maps, H200 bound: taps 1.11 ms, the adjoint's everywhere 1.17, by
  this test 1.01; bench/NOTES.md, 2026-12-06.)
  """
  b, h, w, cin = x_shape
  cout = w_shape[3]
  return b * h * w * (cin + cout) >= 6 * cin * cout


def _adjoint_kernel(w):
  """HWIO kernel flipped in space, I and O swapped (its own inverse)."""
  return jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)


def _lax_conv(x, w, strides, padding, lhs_dil, precision):
  return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=lhs_dil,
                                  dimension_numbers=_NHWC, precision=precision)


def _forward(x, w, strides, padding, lhs_dil, precision):
  """The forward value; transposed convolutions with >= 8 output channels
  as phases (2x faster on XLA:CPU; with fewer, XLA's dilated form wins), or
  under 'cudnn' as the transpose of their adjoint: one convolution with the
  kernel reversed, which XLA's GPU compiler makes cuDNN's backward-data
  call."""
  pads = _adjoint_padding(w.shape, strides, padding, lhs_dil)
  if pads is not None and forms_rule() == 'cudnn':
    adjoint = functools.partial(_lax_conv, w=_adjoint_kernel(w),
                                strides=lhs_dil, padding=pads, lhs_dil=(1, 1),
                                precision=precision)
    y = jax.eval_shape(functools.partial(
        _lax_conv, strides=strides, padding=padding, lhs_dil=lhs_dil,
        precision=precision), x, w)
    return jax.linear_transpose(adjoint, y)(x)[0]
  if any(d > 1 for d in lhs_dil) and w.shape[-1] >= 8:
    y = _transposed_as_phases(x, w, lhs_dil, padding, precision)
    if y is not None:
      return y
  return _lax_conv(x, w, strides, padding, lhs_dil, precision)


def _input_grad(x, w, strides, padding, lhs_dil, precision, dy):
  """dx; of a strided convolution through its space-to-depth form, whose
  input gradient is a stride-1 convolution (2x faster on XLA:CPU than the
  input-dilated one autodiff of the strided form gives)."""
  if any(s > 1 for s in strides):
    kh, kw = w.shape[:2]
    if not kh % strides[0] and not kw % strides[1]:
      _, vjp = jax.vjp(lambda x: _strided_as_stride1(
          x, w, strides, padding, precision), x)
      return vjp(dy)[0]
  _, vjp = jax.vjp(
      lambda x: _lax_conv(x, w, strides, padding, lhs_dil, precision), x)
  return vjp(dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, padding, lhs_dil, precision):
  return _forward(x, w, strides, padding, lhs_dil, precision)


def _conv_fwd(x, w, strides, padding, lhs_dil, precision):
  return _forward(x, w, strides, padding, lhs_dil, precision), (x, w)


def _conv_bwd(strides, padding, lhs_dil, precision, res, dy):
  x, w = res
  dx = _input_grad(x, w, strides, padding, lhs_dil, precision, dy)
  if any(s > 1 for s in strides):
    # XLA's own weight gradient is as fast as any for strided convolutions.
    _, vjp_w = jax.vjp(
        lambda w: _lax_conv(x, w, strides, padding, lhs_dil, precision), w)
    return dx, vjp_w(dy)[0]
  pads = _adjoint_padding(w.shape, strides, padding, lhs_dil)
  if (pads is not None and forms_rule() in ('cudnn', 'cudnn_dw')
      and _maps_outweigh_kernel(x.shape, w.shape)):
    # The adjoint's own weight gradient (dy its input, x its output
    # cotangent): cuDNN's backward-filter call of a strided convolution.
    _, vjp_v = jax.vjp(lambda v: _lax_conv(dy, v, lhs_dil, pads, (1, 1),
                                           precision), _adjoint_kernel(w))
    return dx, _adjoint_kernel(vjp_v(x)[0]).astype(w.dtype)
  return dx, weight_grad(x, dy, w.shape, strides, padding, lhs_dil
                         ).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _output_hw(x_shape, w_shape, strides, padding) -> tuple[int, int]:
  """Output height and width of an NHWC/HWIO convolution (no dilation)."""
  (pt, pb), (pl, pr) = padding
  return ((x_shape[1] + pt + pb - w_shape[0]) // strides[0] + 1,
          (x_shape[2] + pl + pr - w_shape[1]) // strides[1] + 1)


def _window(x, start, size, stride):
  """x[:, start + stride * (0..size-1), ...] in both spatial axes (NHWC)."""
  (si, sj), (sh, sw) = start, stride
  return lax.slice(x, (0, si, sj, 0),
                   (x.shape[0], si + (size[0] - 1) * sh + 1,
                    sj + (size[1] - 1) * sw + 1, x.shape[3]), (1, sh, sw, 1))


def _taps(a, b, kernel_hw: Sequence[int], start, stride, size):
  """dW[i, j] = sum a^T slice(b, start(i, j), stride, size), for every tap."""
  kh, kw = kernel_hw
  rows = []
  for i in range(kh):
    for j in range(kw):
      sl = _window(b, start(i, j), size, stride)
      rows.append(jnp.einsum('bhwc,bhwo->co', a, sl,
                             preferred_element_type=jnp.float32))
  return rows


def weight_grad(x, dy, w_shape, strides, padding, lhs_dil):
  """The weight gradient of an NHWC/HWIO convolution, as k*k matmuls.

  Args:
    x: the convolution's input (B, H, W, I).
    dy: the output cotangent (B, H', W', O).
    w_shape: the kernel shape (kh, kw, I, O).
    strides: window strides; all 1 when `lhs_dil` is not.
    padding: ((top, bottom), (left, right)), non-negative.
    lhs_dil: input dilation (a transposed convolution).

  Returns:
    dW, float32, shape `w_shape`.
  """
  kh, kw, cin, cout = w_shape
  # Products of the inputs' type summed in float32 (exact for bf16 x bf16).
  # XLA:CPU has no bf16 x bf16 -> f32 dot: cast first. On GPU the taps stay
  # bfloat16, half the bytes (DCGAN batch 1024 bf16 H200 program: 26.3 ->
  # 23.7 GB per step; bench/NOTES.md, 2026-12-06).
  if forms_rule() not in GPU_RULES:
    x, dy = x.astype(jnp.float32), dy.astype(jnp.float32)
  if all(d == 1 for d in lhs_dil):
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    # a = x taps (as 'c'), b = dy: einsum gives (I, O) after swapping roles.
    rows = [r.T for r in _taps(dy, xp, (kh, kw), lambda i, j: (i, j), strides,
                               dy.shape[1:3])]
  else:
    pad = max(kh, kw)
    dyp = jnp.pad(dy, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    (pt, _), (pl, _) = padding
    rows = _taps(x, dyp, (kh, kw), lambda i, j: (pt - i + pad, pl - j + pad),
                 lhs_dil, x.shape[1:3])
  return jnp.stack(rows).reshape(kh, kw, cin, cout)
