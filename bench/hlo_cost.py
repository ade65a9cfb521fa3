"""What a GPU program launches and what it costs at best, from its HLO text.

Standard library only, so that the benches can use it on any machine:
`census` and `kernels` count the kernels of an optimized GPU HLO module
(`compiled.as_text()`), `thunks` the host's launches in XLA's thunk-sequence
dump, `roofline` bounds one call's device time from below, and
`zero_dilated` finds kernels that write zero-dilated tensors.
bench/gpu_hlo.py reads programs compiled here for a GPU this machine lacks;
bench/benchlib.py adds the roofline to rows timed on a GPU.
"""

from __future__ import annotations

import collections
import math
import re

# HLO instructions that launch nothing.
_FREE = frozenset({'parameter', 'tuple', 'get-tuple-element', 'bitcast',
                   'constant', 'after-all', 'partition-id', 'replica-id',
                   'opt-barrier'})
_HEADER = re.compile(r'^(ENTRY )?%(\S+) .*\{$')
_OPCODE = re.compile(r'[\]})] ([a-z][a-z0-9-]*)\(')


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
  """{computation name: its instruction lines}, and the entry's name."""
  comps, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    if m := _HEADER.match(line):
      current = m.group(2)
      comps[current] = []
      if m.group(1):
        entry = current
    elif current and line.startswith('  ') and ' = ' in line:
      comps[current].append(line.strip())
  return comps, entry


def _split(line: str) -> tuple[str, str, str, str]:
  """(name, shape text, opcode, text after ' = ') of an instruction line."""
  lhs, rhs = line.removeprefix('ROOT ').split(' = ', 1)
  m = _OPCODE.search(rhs)
  if not m:
    return lhs.lstrip('%'), rhs, rhs.split('(')[0].split()[-1], rhs
  return lhs.lstrip('%'), rhs[:m.start() + 1], m.group(1), rhs


def _launched(hlo_text: str):
  """Yields (category, instruction line, shapes, computations) for every
  kernel-launching instruction of an optimized GPU HLO module: the entry
  computation's and, inside it, while-loop bodies' (once) and
  command-buffer calls' ('command_buffer' and 'while' themselves are
  yielded too, as bookkeeping). `shapes` maps the names defined so far in
  the instruction's computation to their shape text."""
  comps, entry = _computations(hlo_text)

  def walk(name):
    shapes = {}
    for line in comps.get(name, []):
      var, shapes[var], op, rhs = _split(line)
      if op in _FREE:
        continue
      if op == 'while':
        yield 'while', line, shapes, comps
        yield from walk(re.search(r'body=%([\w.-]+)', rhs).group(1))
      elif op == 'call' and 'command_buffer' in rhs:
        yield 'command_buffer', line, shapes, comps
        yield from walk(re.search(r'to_apply=%([\w.-]+)', rhs).group(1))
      elif op == 'custom-call':
        yield 'custom-call:' + re.search(
            r'custom_call_target="([^"]+)"', rhs).group(1), line, shapes, comps
      elif op == 'fusion':
        kind = re.search(r'kind=(k\w+)', rhs).group(1)
        backend = re.search(r'"kind":"(__\w+)"', rhs)
        yield (f'fusion:{kind}' + (f':{backend.group(1)}' if backend
                                   else ''), line, shapes, comps)
      else:
        yield op, line, shapes, comps
  yield from walk(entry)


def census(hlo_text: str) -> collections.Counter:
  """Kernel-launching instructions of an optimized GPU HLO module.

  Walks the entry computation and, inside it, while-loop bodies (counted
  once) and command-buffer calls (their commands, plus one
  'command_buffer' entry per call).

  Args:
    hlo_text: `compiled.as_text()` of a GPU program.

  Returns:
    Counter of categories: 'fusion:<kind>' (with ':<backend kind>' for
    custom fusions, e.g. Triton GEMMs), 'custom-call:<target>' (cuDNN,
    cuBLAS), else the opcode ('copy', ...).
  """
  return collections.Counter(c for c, *_ in _launched(hlo_text))


# Dense tensor-core peaks of Hopper SXM (H100 SXM and H200: one die, one
# clock), FLOP/s, by a kernel's operand type. float32 counts at the TF32
# rate, which is what XLA's convolutions and dots use under JAX's default
# matmul precision; a kernel doing true float32 math is slower still, so the
# bound stays a lower bound.
PEAK_FLOPS = {'bf16': 989.4e12, 'f16': 989.4e12, 'f32': 494.7e12,
              'f8e4m3fn': 1978.9e12, 'f8e5m2': 1978.9e12}
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2,
          'u16': 2, 'f32': 4, 's32': 4, 'u32': 4, 'f64': 8, 's64': 8,
          'u64': 8, 'f8e4m3fn': 1, 'f8e5m2': 1}
_ARRAY = re.compile(r'\b([a-z]+\d*[a-z\d]*)\[([\d,]*)\]')


def _arrays(shape_text: str) -> list[tuple[str, list[int]]]:
  """(element type, dims) of each array in an HLO shape (tuples flattened)."""
  return [(t, [int(d) for d in dims.split(',')] if dims else [])
          for t, dims in _ARRAY.findall(shape_text) if t in _BYTES]


def _nbytes(shape_text: str) -> int:
  return sum(_BYTES[t] * math.prod(d) for t, d in _arrays(shape_text))


def _operands(rhs: str) -> list[str]:
  """Names of an instruction's operands (the text after its opcode)."""
  inside = rhs[_OPCODE.search(rhs).end():]
  return re.findall(r'%([\w.-]+)', inside.split(')', 1)[0])


def _conv_flops(target: str, line: str, shapes: dict) -> tuple[int, str]:
  """FLOPs and operand type of a cuDNN convolution custom call: 2 x the
  forward output's elements x the kernel's elements per output feature,
  whichever of the three tensors the call reads and writes."""
  _, shape, _, rhs = _split(line)
  ins = [_arrays(shapes[o])[0] for o in _operands(rhs)[:2]]
  out = _arrays(shape)[0]
  kernel_labels = re.search(r'dim_labels=\w+_(\w+)->', rhs).group(1)
  if 'BackwardFilter' in target:
    kernel, y = out[1], ins[1][1]
  elif 'BackwardInput' in target:
    kernel, y = ins[1][1], ins[0][1]
  else:
    kernel, y = ins[1][1], out[1]
  per_output = math.prod(kernel) // kernel[kernel_labels.index('o')]
  return 2 * math.prod(y) * per_output, ins[0][0]


# Where a dot's, and a cuBLAS call's, contracted dimensions of the lhs are.
_DOT_DIMS = r'lhs_contracting_dims=\{([\d,]*)\}'
_CUBLAS_DIMS = r'"lhs_contracting_dimensions":\[([^\]]*)\]'


def _matmul_flops(line: str, shapes: dict, dims_re: str) -> tuple[int, str]:
  """FLOPs and operand type of a dot or cuBLAS call: 2 x output elements x
  the contracted size (the lhs dimensions `dims_re` finds)."""
  _, shape, _, rhs = _split(line)
  out = _arrays(shape)[0][1]
  lhs_type, lhs = _arrays(shapes[_operands(rhs)[0]])[0]
  m = re.search(dims_re, rhs)
  dims = re.findall(r'\d+', m.group(1)) if m else []
  return 2 * math.prod(out) * math.prod(lhs[int(d)] for d in dims), lhs_type


def _fusion_flops(rhs: str, comps: dict) -> tuple[int, str]:
  """FLOPs and operand type of the dots inside a fusion (0 if none)."""
  callee = re.search(r'calls=%([\w.-]+)', rhs).group(1)
  flops, dtype, shapes = 0, 'f32', {}
  for line in comps.get(callee, []):
    var, shapes[var], op, body = _split(line)
    if op == 'dot':
      f, dtype = _matmul_flops(line, shapes, _DOT_DIMS)
      flops += f
    elif op == 'fusion':  # Nested (Triton) fusions.
      f, t = _fusion_flops(body, comps)
      flops, dtype = flops + f, t if f else dtype
  return flops, dtype


def roofline(hlo_text: str, bandwidth: float,
             peaks: dict[str, float] = PEAK_FLOPS) -> dict:
  """A lower bound of one call's device time from its optimized GPU program.

  Each kernel takes at least its FLOPs over the tensor-core peak of its
  operand type and its bytes over the memory bandwidth, whichever is
  longer; the bound is the sum over the kernels (they run one after
  another). FLOPs: cuDNN convolutions and the dots in fusions (Triton
  GEMMs) and cuBLAS calls; elementwise and reduction work counts as free.
  Bytes: every operand read whole and every result written once (cuDNN
  scratch left out), so a fusion that reads a slice of an operand is
  overcharged, and nothing counts the L2 cache: an estimate, good for
  comparing programs and for telling a goal that no schedule can reach.

  Args:
    hlo_text: `compiled.as_text()` of a GPU program.
    bandwidth: device memory bandwidth, bytes/s.
    peaks: FLOP/s by operand element type.

  Returns:
    {'roofline_ms': the bound, 'compute_ms': sum of FLOPs over peak,
    'memory_ms': sum of bytes over bandwidth, 'gflop', 'gbyte',
    'roofline_ms_by_category': the bound split by `census` category}.
  """
  total = compute = memory = flops_sum = bytes_sum = 0.0
  by_category = collections.Counter()
  for category, line, shapes, comps in _launched(hlo_text):
    if category in ('while', 'command_buffer'):
      continue
    _, shape, _, rhs = _split(line)
    results = _arrays(shape)
    flops, dtype = 0, 'f32'
    if category.startswith('custom-call:'):
      target = category.split(':', 1)[1]
      results = results[:1]  # The rest is scratch.
      if target.startswith('__cudnn$conv'):
        flops, dtype = _conv_flops(target, line, shapes)
      elif target.startswith('__cublas'):
        flops, dtype = _matmul_flops(line, shapes, _CUBLAS_DIMS)
    elif category.startswith('fusion:'):
      flops, dtype = _fusion_flops(rhs, comps)
    nbytes = sum(_nbytes(shapes.get(o, '')) for o in set(_operands(rhs))) + sum(
        _BYTES[t] * math.prod(d) for t, d in results)
    t_flops, t_bytes = flops / peaks.get(dtype, peaks['f32']), nbytes / bandwidth
    total += max(t_flops, t_bytes)
    by_category[category] += 1e3 * max(t_flops, t_bytes)
    compute, memory = compute + t_flops, memory + t_bytes
    flops_sum, bytes_sum = flops_sum + flops, bytes_sum + nbytes
  return {'roofline_ms': 1e3 * total, 'compute_ms': 1e3 * compute,
          'memory_ms': 1e3 * memory, 'gflop': flops_sum / 1e9,
          'gbyte': bytes_sum / 1e9,
          'roofline_ms_by_category': dict(by_category.most_common())}


def _dilates(lines: list[str], comps: dict) -> bool:
  """Whether instruction `lines` (and fusions they call) hold a `pad` with
  interior padding: a tensor with zeros inserted between its elements."""
  for line in lines:
    _, _, op, rhs = _split(line)
    if op == 'pad':
      config = re.search(r'padding=([\d_x-]+)', rhs).group(1)
      if any(len(d.split('_')) == 3 and int(d.split('_')[2]) > 0
             for d in config.split('x')):
        return True
    elif op == 'fusion' and _dilates(
        comps.get(re.search(r'calls=%([\w.-]+)', rhs).group(1), []), comps):
      return True
  return False


def zero_dilated(hlo_text: str) -> dict:
  """Kernels of an optimized GPU program that write a zero-dilated tensor.

  A transposed or strided convolution's gradient that XLA does not hand to
  cuDNN's backward-data call becomes a `pad` with interior padding (zeros
  between the elements) and a convolution over it, s*s the FLOPs: what
  `MEDJAX_CONV_FORMS=cudnn` and the space-to-depth forms exist to avoid.

  Returns:
    {'zero_dilated_kernels': how many, 'zero_dilated_gbyte': the GB they
    write}.
  """
  count, nbytes = 0, 0
  for category, line, _, comps in _launched(hlo_text):
    if category.startswith('fusion:') or category == 'pad':
      if _dilates([line], comps):
        count += 1
        nbytes += _nbytes(_split(line)[1])
  return {'zero_dilated_kernels': count, 'zero_dilated_gbyte': nbytes / 1e9}


_THUNK = re.compile(r'^( *)\d+: (k\w+)')


def thunks(sequence_text: str) -> dict[str, int]:
  """What the GPU runtime launches per call, from XLA's thunk sequence.

  `sequence_text` is the `*.thunk_sequence_after_thunk_passes.txt` an XLA
  dump writes (`*.thunk_sequence.txt` where the passes changed nothing): one
  line per thunk, commands captured into a CUDA graph (`kCommandBuffer`)
  indented under it.

  Returns:
    {'launches': top-level thunks (a kernel, a cuDNN call, a copy or a whole
    graph: what the host issues one by one), 'graphs': how many of those are
    CUDA graphs, 'in_graphs': thunks captured inside them}.
  """
  launches = graphs = in_graphs = 0
  for line in sequence_text.splitlines():
    if m := _THUNK.match(line):
      if m.group(1):
        in_graphs += 1
      else:
        launches += 1
        graphs += m.group(2) == 'kCommandBuffer'
  return {'launches': launches, 'graphs': graphs, 'in_graphs': in_graphs}


def kernels(counts: collections.Counter) -> int:
  """Launches per call: every counted instruction but the bookkeeping."""
  return sum(v for k, v in counts.items()
             if k not in ('while', 'command_buffer'))
