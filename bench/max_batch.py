r"""Finds the largest train-step batch that fits in device memory.

  python bench/max_batch.py                 # SRGAN 96x96, float32 and bfloat16
  python bench/max_batch.py --config=configs/srresnet_brain.py --dtypes bfloat16
  python bench/max_batch.py --memory_limit_mb=20000 --multiple=1 --run_steps=0
  JAX_PLATFORMS=cpu PYTHONPATH=/tmp/cudasite python bench/max_batch.py \
      --target_config bench/h100_sxm.txtpb      # no GPU needed (gpu_hlo.py)

Method (few compiles: on a GPU one SRGAN compile takes tens of seconds):
  1. What a batch b needs, from XLA without running it: the train step of
     bench/train_step.py (state donated) is compiled at batch b and its memory
     analysis gives needed(b) = arguments + outputs - aliased + temporaries.
  2. The limit: --memory_limit_mb, else the device's
     `memory_stats()['bytes_limit']`. On a GPU that is the XLA client
     allocator's pool, XLA_PYTHON_CLIENT_MEM_FRACTION of the card (JAX's
     default: 75%); the fraction in use is printed. CPUs report no limit:
     there --memory_limit_mb is required.
  3. Search: compile at the two --probe batches (16 and 64), fit
     needed(b) = a + c*b, predict the largest multiple of --multiple under the
     limit, and compile there and one multiple above; refit on the two
     figures nearest the limit until needed(b) <= limit < needed(b+multiple)
     holds from compiled figures (at most --max_extra_compiles, default
     MAX_EXTRA_COMPILES, after the probes; --max_batch caps the answer).
     Memory is close to linear in the batch until XLA rematerialises to
     stay under the limit: near it the figure flattens (SRGAN float32 on an
     H200: 106.0 GB at batch 2456, 105.9 GB at 2528), so the search there
     takes more compiles than the line predicts.
  4. Confirm by running (--run_steps, 0 skips): N steps at the batch found,
     timed; if the device runs out of memory (device buffers outside the
     step's arguments and allocator fragmentation are not in the figure),
     step down by --multiple and retry (at most MAX_RUN_RETRIES).

--target_config compiles for the GPU a target description names, on a
machine without it (bench/gpu_hlo.py's deviceless compile): steps 1-3 from
abstract arguments, the limit from the description's memory, no run. XLA's
rematerialisation then does not aim at the device allocator's limit, so the
answer is a lower bound (H200, 2026-11-26: 2,192 here, 2,528 on the device;
+3% need where memory is linear in the batch).

One search per --dtypes entry. SR configs run on HR-crop-sized images (96x96
for SRGAN), as in bench/train_step.py; the SRGAN VGG content loss uses random
weights unless --vgg_weights names the converted file (same memory). Any
config key can be overridden (`--config.sr.hr_crop=128`).

Prints one JSON line per compiled batch ('kind': 'probe': batch, needed MB,
limit MB, fits, compile s, XLA's memory analysis) and one per search
('kind': 'result'), then a short table. Runs on CPU and GPU; imports nothing
that needs TensorFlow. Record results with the device and date in
docs/benchmarks.md.
"""

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # pylint: disable=wrong-import-position
import gpu_hlo  # pylint: disable=wrong-import-position
import train_step  # pylint: disable=wrong-import-position

from medjax.models import conv  # pylint: disable=wrong-import-position

MB = 2**20
# Compiles after the two probes before the search reports what it knows.
MAX_EXTRA_COMPILES = 6
# Smaller batches tried after the device ran out of memory on a run.
MAX_RUN_RETRIES = 4


@dataclasses.dataclass
class SearchResult:
  """The outcome of `search`.

  Attributes:
    largest: the largest multiple of `multiple` (<= the cap) whose need is
      known to be within the limit; 0 when none is (even one `multiple` is
      over the limit, or no fitting multiple was evaluated).
    exact: whether the evaluated figures establish the answer: either
      needed(largest) <= limit < needed(largest + multiple), or largest is the
      cap and fits, or largest is 0 and needed(multiple) > limit.
    needed: every evaluated batch -> bytes, in evaluation order.
    note: why the search stopped, in words.
  """
  largest: int
  exact: bool
  needed: dict[int, float]
  note: str


def search(needed: Callable[[int], float], limit: float,
           probes: Sequence[int] = (16, 64), multiple: int = 8,
           max_batch: int = 4096,
           max_extra: int = MAX_EXTRA_COMPILES) -> SearchResult:
  """The largest multiple of `multiple` whose `needed` is within `limit`.

  Assumes `needed` grows with the batch (only the evaluated figures are
  trusted: a multiple counts as fitting or not only once evaluated). Each
  `needed` call is one compile in the benchmark, so calls are few: the
  probes, then candidates predicted by a line through the two evaluated
  figures nearest the limit (a secant step), kept strictly between the
  largest multiple known to fit and the smallest known not to; after two
  such steps in a row that do not halve that bracket (a jump in the
  figures), one bisection step.

  Args:
    needed: batch -> bytes the step needs.
    limit: bytes available.
    probes: at least two distinct positive batches for the first line.
    multiple: the answer is a multiple of this.
    max_batch: the answer is at most this (rounded down to `multiple`).
    max_extra: most `needed` calls after the probes; when spent, the result
      reports the largest multiple known to fit, with exact=False.

  Returns:
    A `SearchResult`. A limit below even one `multiple`'s need gives
    largest=0 and a note (not an exception), so that a run over several
    dtypes goes on to the next one.
  """
  probes = sorted(set(int(p) for p in probes))
  if len(probes) < 2 or probes[0] < 1:
    raise ValueError(f'need two distinct positive probe batches: {probes}')
  if multiple < 1 or max_batch < multiple:
    raise ValueError(f'need 1 <= multiple ({multiple}) <= max_batch '
                     f'({max_batch})')
  cap = max_batch // multiple * multiple
  known: dict[int, float] = {}
  # lo: largest multiple known to fit (0: none yet); hi: smallest multiple
  # known not to (cap + multiple: none yet, as if the one past the cap).
  lo, hi = 0, cap + multiple

  def evaluate(b):
    nonlocal lo, hi
    known[b] = float(needed(b))
    if b % multiple == 0 and b <= cap:
      if known[b] <= limit:
        lo = max(lo, b)
      else:
        hi = min(hi, b)

  for p in probes:
    evaluate(p)
  extra = stalled = 0
  while hi - lo > multiple:
    if extra >= max_extra:
      return SearchResult(
          lo, False, known,
          f'stopped after {extra} compiles past the probes: {lo} fits, '
          f'{"nothing known above" if hi > cap else f"{hi} does not"}')
    (b1, n1), (b2, n2) = sorted(known.items(),
                                key=lambda kv: abs(kv[1] - limit))[:2]
    slope = (n2 - n1) / (b2 - b1)
    if slope > 0 and stalled < 2:
      guess = b1 + (limit - n1) / slope
      candidate = int(max(min(guess, cap), 0)) // multiple * multiple
    else:
      # Not increasing here, or two secant steps in a row that did not halve
      # the bracket (a jump in the figures): bisect.
      candidate = (lo + hi) // 2 // multiple * multiple
      stalled = 0
    candidate = min(max(candidate, lo + multiple), hi - multiple)
    width, bracketed = hi - lo, hi <= cap
    evaluate(candidate)  # New: known fitting <= lo, known too big >= hi.
    extra += 1
    if bracketed:
      stalled = stalled + 1 if hi - lo > width / 2 else 0
  if lo >= hi:
    return SearchResult(lo, False, known,
                        f'needed is not increasing: {lo} fits, {hi} does not')
  if lo == 0:
    note = (f'even batch {multiple} needs {known[multiple] / MB:.1f} MB, over '
            f'the limit of {limit / MB:.1f} MB')
  elif lo == cap:
    note = f'capped by --max_batch={max_batch}'
  else:
    note = f'{lo} fits, {hi} does not'
  return SearchResult(lo, True, known, note)


def memory_limit(limit_mb: float | None) -> tuple[int | None, str]:
  """(bytes the step may use, where the figure comes from).

  --memory_limit_mb if given; else the device's allocator limit
  (`memory_stats()['bytes_limit']`: on a GPU,
  XLA_PYTHON_CLIENT_MEM_FRACTION of the card, 0.75 unless set); else None
  (CPUs report no limit).
  """
  if limit_mb is not None:
    return int(limit_mb * MB), '--memory_limit_mb'
  stats = jax.devices()[0].memory_stats()
  if stats and stats.get('bytes_limit'):
    fraction = os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION')
    fraction = (f'XLA_PYTHON_CLIENT_MEM_FRACTION={fraction}' if fraction else
                'XLA_PYTHON_CLIENT_MEM_FRACTION unset: JAX default 0.75')
    return int(stats['bytes_limit']), f'device bytes_limit ({fraction})'
  return None, 'the device reports no memory limit'


def target_memory_limit(target_config: str,
                        limit_mb: float | None) -> tuple[int, str]:
  """(bytes, source) for a step compiled for `target_config`'s GPU.

  --memory_limit_mb if given; else what JAX's client pool would be on that
  card: XLA_PYTHON_CLIENT_MEM_FRACTION (0.75 unless set) of the total
  memory the target config gives (`device_memory_size`).
  """
  if limit_mb is not None:
    return int(limit_mb * MB), '--memory_limit_mb'
  fraction = float(os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION', 0.75))
  total = gpu_hlo.device_memory_bytes(target_config)
  return int(total * fraction), (
      f'{fraction} x device_memory_size of {target_config} '
      f'({total / MB:.0f} MB)')


def needed_bytes(memory: dict[str, float]) -> float:
  """What one call of a compiled step needs, from XLA's memory analysis.

  Arguments (state, batch, key) and outputs (new state, metrics) are live
  together, plus the temporaries; but the state is donated, so XLA writes
  the new state into the old state's buffers: those bytes are counted both
  as argument and as output, and `alias` (the donated bytes reused) is
  subtracted once.

  The task's constants (SRGAN: the VGG19 weights) are an argument of
  train_step.build's step, so they are counted. Not counted: other device
  buffers (allocator fragmentation, the runtime's own); the run in `find`
  is what checks the whole.
  """
  if not memory:
    raise RuntimeError('this backend reports no memory analysis of the step')
  mb = (memory['argument_mb'] + memory['output_mb'] - memory['alias_mb']
        + memory['temp_mb'])
  return mb * MB


def is_out_of_memory(error: BaseException) -> bool:
  """Whether `error` is the device running out of memory on a call."""
  runtime_error = getattr(jax.errors, 'JaxRuntimeError', RuntimeError)
  message = str(error)
  return isinstance(error, runtime_error) and (
      'RESOURCE_EXHAUSTED' in message or 'out of memory' in message.lower())


def confirm(run_at: Callable[[int], dict], batch: int, multiple: int,
            retries: int = MAX_RUN_RETRIES) -> tuple[int, dict, list[str]]:
  """Runs at `batch`, stepping down by `multiple` on out-of-memory errors.

  Args:
    run_at: batch -> timing dict; raises the device's out-of-memory error
      when the batch does not fit (other errors propagate).
    batch: the batch to try first (> 0).
    multiple: the step down.
    retries: most smaller batches tried.

  Returns:
    (the batch that ran, 0 if none did; its timing dict, empty if none;
    the out-of-memory messages met, one line each).
  """
  failures = []
  for _ in range(retries + 1):
    if batch < 1:
      break
    try:
      return batch, run_at(batch), failures
    except Exception as e:  # pylint: disable=broad-except
      if not is_out_of_memory(e):
        raise
      failures.append(f'{batch}: {(str(e).splitlines() or [""])[0][:200]}')
    batch -= multiple
  return 0, {}, failures


def _free():
  gc.collect()


class _Step:
  """The step of one config and dtype: compiles at any batch, and runs.

  One state for every batch (the state does not depend on the batch, and
  building it compiles task.init): each probe lowers the step for a batch
  *shape*, so probing allocates nothing on the device. Only the executable
  of the largest fitting batch so far is kept (the run reuses it); the others
  are dropped at once.
  """

  def __init__(self, config, first_batch: int, limit: float, multiple: int,
               cap: int, emit: Callable[[dict], None], sharding=None):
    self.config, self.limit, self.emit = config, limit, emit
    self.multiple, self.cap = multiple, cap
    if sharding is None:
      self.step, self.state, batch, self.consts = train_step.build(
          config, first_batch)
      self.key = jax.random.key(0)
      # A host copy as the template of every batch; the device copy goes.
      self.host_batch = jax.tree.map(np.asarray, batch)
    else:
      # Compile only, for `sharding`'s device (maybe one this machine does
      # not have): abstract arguments, nothing computed or allocated.
      self.step, self.state, batch, self.key, self.consts = (
          gpu_hlo.abstract_step(config, first_batch, sharding))
      self.host_batch = batch
    del batch
    self.best: tuple[int, Any] | None = None  # (batch, compiled)
    self.figures: dict[int, float] = {}  # batch -> bytes needed
    self.compiles = 0
    self.compile_s = 0.0

  def spec(self, b: int):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((b,) + x.shape[1:], x.dtype,
                                       sharding=getattr(x, 'sharding', None)),
        self.host_batch)

  def device_batch(self, b: int):
    """`b` images: the template's, repeated (values do not matter)."""
    return jax.tree.map(
        lambda x: jax.device_put(np.resize(x, (b,) + x.shape[1:])),
        self.host_batch)

  def row(self, **fields) -> dict:
    return {'bench': 'max_batch', 'model': self.config.model.name,
            'image_size': self.config.dataset.image_size,
            'dtype': self.config.model.dtype, **fields}

  def needed(self, b: int, note: str | None = None) -> float:
    """Compiles at batch `b`; prints and returns the bytes it needs."""
    compiled, compile_s, _, memory = benchlib.compile_timed(
        self.step, self.state, self.spec(b), self.key, self.consts)
    self.compiles += 1
    self.compile_s += compile_s
    need = self.figures[b] = needed_bytes(memory)
    fits = need <= self.limit
    self.emit(self.row(kind='probe', batch=b, needed_mb=need / MB,
                       limit_mb=self.limit / MB, fits=fits,
                       compile_s=compile_s,
                       **{f'step_{k}': v for k, v in memory.items()},
                       **({'note': note} if note else {})))
    if (fits and b % self.multiple == 0 and b <= self.cap
        and (self.best is None or b > self.best[0])):
      self.best = (b, compiled)
    del compiled
    _free()
    return need

  def run(self, b: int, steps: int) -> dict:
    """`steps` steps at batch `b`; the first is the warm-up when steps > 1.

    Raises the device's out-of-memory error if `b` does not fit; the state
    is then rebuilt (the failed call may have consumed the donated one).
    """
    if self.best is None or self.best[0] != b:
      self.best = None
      _free()
      self.needed(b, note='compiled for the run')
      if self.best is None or self.best[0] != b:
        raise RuntimeError(f'batch {b} is over the limit by XLA\'s figures')
    compiled = self.best[1]
    batch = self.device_batch(b)
    try:
      state = self.state
      self.state = None  # Donated to the first call.
      timed = max(steps - 1, 1)
      if steps > 1:
        state, _ = compiled(state, batch, jax.random.key(0), self.consts)
        jax.block_until_ready(state)
      t = time.perf_counter()
      for i in range(timed):
        state, metrics = compiled(state, batch, jax.random.key(i + 1),
                                  self.consts)
      jax.block_until_ready((state, metrics))
      step_s = (time.perf_counter() - t) / timed
      self.state = state
    except Exception as e:  # pylint: disable=broad-except
      if not is_out_of_memory(e):
        raise
      del batch, state, compiled
      self.best = None
      self.state = None
      _free()
      # A fresh state (and step) for the next, smaller try.
      self.step, self.state, _, self.consts = train_step.build(self.config,
                                                               1)
      raise
    return {'images_per_s': b / step_s, 'step_ms': 1e3 * step_s,
            'timed_steps': timed, **benchlib.peak_memory()}


def find(config, args, limit: int, limit_source: str,
         emit: Callable[[dict], None], sharding=None) -> dict:
  """One search (and run) for one config; returns the result row.

  With `sharding`, the step compiles for that sharding's device and never
  runs (`args.run_steps` must be 0): see --target_config.
  """
  multiple = args.multiple
  cap = args.max_batch // multiple * multiple
  step = _Step(config, min(args.probe), limit, multiple, cap, emit, sharding)
  stats = (jax.devices()[0].memory_stats() or {}) if sharding is None else {}
  in_use = stats.get('bytes_in_use')
  found = search(step.needed, limit, args.probe, multiple, args.max_batch,
                 args.max_extra_compiles)
  row = step.row(
      kind='result', largest_batch=found.largest,
      needed_mb=(found.needed[found.largest] / MB if found.largest else None),
      limit_mb=limit / MB, limit_source=limit_source,
      xla_largest_batch=found.largest, exact=found.exact, note=found.note,
      probe_compiles=step.compiles, compile_s_total=step.compile_s,
      multiple=multiple, max_batch=args.max_batch,
      device_in_use_before_mb=in_use / MB if in_use is not None else None,
      method='xla memory_analysis', run_ok=None, run_steps=args.run_steps)
  if args.run_steps > 0 and found.largest > 0:
    batch, timing, failures = confirm(
        lambda b: step.run(b, args.run_steps), found.largest, multiple)
    row.update(method='xla memory_analysis + run', run_ok=batch > 0,
               largest_batch=batch or None, run_failures=failures,
               probe_compiles=step.compiles, compile_s_total=step.compile_s,
               **timing)
    if batch and batch != found.largest:
      row['needed_mb'] = step.figures[batch] / MB
      row['note'] += f'; ran out of memory above {batch}'
  # The state and executable go with `step` when this returns; main then
  # collects them before the next dtype's search.
  row = {**row, **benchlib.environment()}
  if sharding is not None:
    device, = sharding.device_set
    row.update(device=f'{device.device_kind} (compiled here, '
                      'not run)', backend='gpu (deviceless)',
               target_config=args.target_config,
               method='xla memory_analysis, deviceless compile')
  return row


def _cell(value, fmt='{:.0f}'):
  return '-' if value is None else fmt.format(value)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dtypes', nargs='+', default=['float32', 'bfloat16'])
  parser.add_argument('--probe', type=int, nargs=2, default=[16, 64],
                      help='the two batches compiled first, for the line fit')
  parser.add_argument('--multiple', type=int, default=8,
                      help='the answer is a multiple of this')
  parser.add_argument('--memory_limit_mb', type=float, default=None,
                      help="default: the device's bytes_limit (required on "
                      'CPUs)')
  parser.add_argument('--run_steps', type=int, default=None,
                      help='steps run at the batch found (0: no run); '
                           'default 2, 0 with --target_config')
  parser.add_argument('--target_config', default=None,
                      help='compile for the GPU this GpuTargetConfig text '
                           'proto describes (bench/h100_sxm.txtpb, '
                           'bench/h200.txtpb) without that GPU: needs the '
                           'CUDA PJRT plugin (bench/gpu_hlo.py); the limit '
                           'is then XLA_PYTHON_CLIENT_MEM_FRACTION (0.75) of '
                           'its device_memory_size; nothing runs')
  # SRGAN bfloat16 fits 6,304 on an H200 (compiled for it, 2026-12-07).
  parser.add_argument('--max_batch', type=int, default=16384)
  parser.add_argument('--max_extra_compiles', type=int,
                      default=MAX_EXTRA_COMPILES,
                      help='most compiles after the probes; then the largest '
                           'batch known to fit is reported (not exact)')
  parser.add_argument('--vgg_weights', default='random_vgg')
  args, config_argv = benchlib.parse_args(parser, argv,
                                          'configs/srgan_brain.py')
  if args.multiple < 1 or args.max_batch < args.multiple:
    parser.error('need 1 <= --multiple <= --max_batch')
  if len(set(args.probe)) < 2 or min(args.probe) < 1:
    parser.error('--probe needs two distinct positive batches')
  sharding = None
  if args.target_config:
    if args.run_steps:
      parser.error('--target_config compiles only: --run_steps must be 0')
    args.run_steps = 0
    sharding = jax.sharding.SingleDeviceSharding(
        gpu_hlo.gpu_device(args.target_config))
    # The rule is read when tracing, and the default backend is this CPU.
    conv.forms_rule = lambda: 'gpu'
    limit, source = target_memory_limit(args.target_config,
                                        args.memory_limit_mb)
  else:
    args.run_steps = 2 if args.run_steps is None else args.run_steps
    limit, source = memory_limit(args.memory_limit_mb)
  if limit is None:
    parser.error(f'{jax.devices()[0].device_kind} ({jax.default_backend()}): '
                 f'{source}; pass --memory_limit_mb')
  print(f'# memory limit {limit / MB:.1f} MB from {source}', flush=True)

  def emit(row):
    print(json.dumps(row), flush=True)

  rows = []
  for dtype in args.dtypes:
    config = train_step.step_config(config_argv, dtype, args.vgg_weights)
    row = find(config, args, limit, source, emit, sharding)
    emit(row)
    rows.append(row)
    jax.clear_caches()
    _free()
  print('\n| model | size | dtype | largest batch | needed MB | limit MB | '
        'compiles | run | img/s | step ms | peak MB | device |\n'
        '|---|---|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    run = {None: 'not run', True: 'ok', False: 'out of memory'}[r['run_ok']]
    peak = (f"{r['peak_memory_mb']:.0f} "
            f"({r['peak_memory_source'].split()[0]})"
            if 'peak_memory_mb' in r else '-')
    exact = '' if r['exact'] else ' (bound hit)'
    print(f"| {r['model']} | {r['image_size']} | {r['dtype']} | "
          f"{_cell(r['largest_batch'], '{}')}{exact} | "
          f"{_cell(r['needed_mb'], '{:.1f}')} | {r['limit_mb']:.1f} | "
          f"{r['probe_compiles']} | {run} | "
          f"{_cell(r.get('images_per_s'), '{:.1f}')} | "
          f"{_cell(r.get('step_ms'), '{:.1f}')} | {peak} | {r['device']} |")
  return rows


if __name__ == '__main__':
  main()
