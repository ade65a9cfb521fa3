r"""Turns one device session's bench JSON lines into docs/benchmarks.md tables.

  python bench/report.py torch.log opencv.log medjax.log [...] \
      [--commit abc1234] [--date 2026-11-26] [--json]

Every log line that parses as a JSON object is a measurement (other lines are
skipped): the PyTorch reference (shared/reference/ref_torch.py), the OpenCV
one (ref_degrade.py) and medjax's bench/ train_step, metrics, degradations,
pipeline and max_batch scripts. Prints the device/date/commit header and
markdown tables against the performance issue's goals: train steps and
Inception vs PyTorch (each dtype >= 2x PyTorch's best; Inception >=
torch.compile), the train steps' fixed cost per step (from two batches)
and their cost per kernel beyond the roofline (GPU rows), degradations vs
OpenCV (>= 10x), real vs synthetic input pipeline (<= 1.10), largest batch.
A figure measured more than once is the median, marked `*` and footnoted
with the count. `--json`: one JSON object per table row instead. Standard
library only (no jax): runs anywhere.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
from typing import Any, Callable, Iterable, Sequence

Row = dict[str, Any]
TORCH_MODES = {'fp32_eager': 'fp32', 'bf16_cl_eager': 'bf16 CL',
               'bf16_cl_compile': 'compile'}
DTYPES = {'float32': 'fp32', 'bfloat16': 'bf16'}
# medjax train_step (model, image_size) -> the reference's case name.
TRAIN_WORKLOADS = {('dcgan', 64): 'dcgan64', ('srgan', 96): 'srgan_x4_96'}
ORDER = ('dcgan64', 'srgan_x4_96', 'inception_fid')
OPENCV_ISSUE = (9100.0, 'issue table (16 processes)')
TRAIN_GOAL, DEGRADE_GOAL, PIPELINE_GOAL = 2.0, 10.0, 1.10


def parse_rows(text: str) -> list[Row]:
  """The JSON objects of a log's lines.

  Args:
    text: a log's contents; lines that are not one JSON object are skipped.

  Returns:
    The dicts, in order.
  """
  rows = []
  for line in (l.strip() for l in text.splitlines()):
    try:
      row = json.loads(line) if line.startswith('{') else None
    except ValueError:
      continue
    if isinstance(row, dict):
      rows.append(row)
  return rows


def _median(rows: Iterable[Row], field: str):
  vals = [r[field] for r in rows if isinstance(r.get(field), (int, float))
          and not isinstance(r[field], bool) and r[field] == r[field]]
  return statistics.median(vals) if vals else None


def _group(rows: Iterable[Row], key: Callable[[Row], Any]) -> dict:
  out = {}
  for r in rows:
    if (k := key(r)) is not None:
      out.setdefault(k, []).append(r)
  return out


def _sorted(groups: dict) -> list:
  """Items by known workload first, then name, then batch as a number."""
  def key(kv):
    name, batch = kv[0][0], kv[0][1]
    base = _base(name)
    return (ORDER.index(base) if base in ORDER else len(ORDER), str(name),
            batch if isinstance(batch, (int, float)) else float('inf'))
  return sorted(groups.items(), key=key)


def _workload(r: Row) -> str | None:
  """The reference's case name of a medjax row; a train step timed with
  its conv forms forced (`conv_forms` 'on'/'off'/'gemm', the last with its
  bound `conv_gemm_mb`), its BatchNorm layers
  medjax's fused ones (`batchnorm` 'fused'), its D passes two calls
  (`one_d_call` False), its state packed
  (`pack_state`), its kernels stored OHWI (`state_kernel_layout`) or under
  XLA_FLAGS is a variant of it, e.g. 'dcgan64
  (conv forms on)' or 'dcgan64 (XLA_FLAGS --xla_gpu_autotune_level=0)',
  compared with the same reference; so is InceptionV3 with its BatchNorms
  folded (`fold_bn`): 'inception_fid (BN folded)'."""
  if r.get('bench') == 'train_step' and 'model' in r:
    size = r.get('image_size')
    name = TRAIN_WORKLOADS.get((r['model'], size), f"{r['model']}{size or ''}")
    forms = r.get('conv_forms', 'auto')
    if forms != 'auto':
      bound = (f" <= {r['conv_gemm_mb']:g} MB" if 'conv_gemm_mb' in r
               else '')  # The 'gemm' rule's patch bound.
      name += f' (conv forms {forms}{bound})'

    if not r.get('one_d_call', True):
      name += ' (two D calls)'
    if r.get('batchnorm', 'flax') != 'flax':
      name += f" (BatchNorm {r['batchnorm']})"
    if r.get('pack_state'):
      name += ' (state packed)'
    if r.get('state_kernel_layout', 'hwio') != 'hwio':
      name += f" (kernels {r['state_kernel_layout'].upper()})"
    if r.get('xla_flags'):
      name += f" (XLA_FLAGS {r['xla_flags']})"
    return name
  if r.get('bench') == 'metrics' and r.get('case'):
    return r['case'] + (' (BN folded)' if r.get('fold_bn') else '')
  return None


def _base(workload: str) -> str:
  """'dcgan64 (conv forms on)' -> 'dcgan64'."""
  return str(workload).split(' (')[0]


def compare_steps(rows: Sequence[Row]) -> list[Row]:
  """Train steps and metric networks, medjax vs PyTorch, per workload/batch.

  Args:
    rows: all parsed rows.

  Returns:
    One dict per (workload, batch): `pytorch_<mode>` img/s ('error' if every
    run of it failed, None if absent), `pytorch_best` (over non-error modes),
    `pytorch_best_mode`; per dtype `medjax_`, `ratio_` (over best), `mfu_`,
    `roofline_` (the program's roofline over the measured time), `compile_s_`, `peak_memory_mb_`; `missing` (dtypes without a figure),
    `goal`, `met` (None: unknown), `runs` ({column: runs} for medians).
  """
  ref = _group((r for r in rows if r.get('bench', 'reference') == 'reference'
                and 'mode' in r),
               lambda r: (r.get('case'), r.get('bs'), r['mode']))
  mj = _group((r for r in rows if 'images_per_s' in r and _workload(r)),
              lambda r: (_workload(r), r.get('batch'), r.get('dtype')))
  keys = {k[:2]: None for k in [*ref, *mj]}
  out = []
  for (w, b), _ in _sorted(keys):
    row = {'table': 'steps', 'workload': w, 'batch': b, 'runs': {}}
    for mode in TORCH_MODES:
      group = ref.get((_base(w), b, mode), [])
      ok = [r for r in group if 'error' not in r]
      row[f'pytorch_{mode}'] = _median(ok, 'img_s') if ok else (
          'error' if group else None)
      if len(ok) > 1:
        row['runs'][f'pytorch_{mode}'] = len(ok)
    numeric = {m: row[f'pytorch_{m}'] for m in TORCH_MODES
               if isinstance(row[f'pytorch_{m}'], (int, float))}
    best_mode = max(numeric, key=numeric.get) if numeric else None
    best = row['pytorch_best'] = numeric.get(best_mode)
    row['pytorch_best_mode'] = best_mode
    for d in DTYPES:
      group = mj.get((w, b, d), [])
      for name, field in (('medjax', 'images_per_s'), ('mfu', 'mfu'),
                          ('roofline', 'roofline_fraction'),
                          ('compile_s', 'compile_s'),
                          ('peak_memory_mb', 'peak_memory_mb')):
        row[f'{name}_{d}'] = _median(group, field)
      value = row[f'medjax_{d}']
      row[f'ratio_{d}'] = value / best if value is not None and best else None
      if len(group) > 1:
        row['runs'][f'medjax_{d}'] = len(group)
    measured = [row[f'medjax_{d}'] for d in DTYPES
                if row[f'medjax_{d}'] is not None]
    row['missing'] = [d for d in DTYPES if row[f'medjax_{d}'] is None]
    row['goal'], row['met'] = '-', None
    if _base(w) == 'inception_fid':
      target = numeric.get('bf16_cl_compile')
      row['goal'] = 'best dtype >= compile'
      if measured and target:
        row['met'] = max(measured) >= target
    elif best:
      row['goal'] = f'each dtype >= {TRAIN_GOAL:g}x best'
      if measured:
        row['met'] = all(row[f'ratio_{d}'] >= TRAIN_GOAL for d in DTYPES
                         if row[f'ratio_{d}'] is not None)
    out.append(row)
  return out


def compare_degradations(rows: Sequence[Row]) -> list[Row]:
  """medjax degradation specs vs OpenCV (goal: 10x).

  Args:
    rows: all parsed rows.

  Returns:
    One dict per (spec, batch): `medjax_img_s`, `opencv_img_s` and
    `opencv_source` (the ref_degrade.py rows with most workers, else the
    issue's 9,100 img/s), `ratio`, `goal`, `met`, `runs`.
  """
  cv = [r for r in rows if r.get('case') == 'opencv_degrade_cpu'
        and _median([r], 'img_s') is not None]
  opencv, source, cv_runs = *OPENCV_ISSUE, {}
  if cv:
    workers = max(r.get('workers') or 0 for r in cv)
    cv = [r for r in cv if (r.get('workers') or 0) == workers]
    opencv, source = _median(cv, 'img_s'), f'ref_degrade.py, {workers} workers'
    cv_runs = {'opencv_img_s': len(cv)} if len(cv) > 1 else {}
  out = []
  for (spec, batch), group in _sorted(_group(
      (r for r in rows if r.get('bench') == 'degradations'),
      lambda r: (r.get('spec'), r.get('batch')))):
    value = _median(group, 'images_per_s')
    ratio = value / opencv if value is not None else None
    out.append({'table': 'degradations', 'spec': spec, 'batch': batch,
                'medjax_img_s': value, 'opencv_img_s': opencv,
                'opencv_source': source, 'ratio': ratio,
                'goal': f'>= {DEGRADE_GOAL:g}x OpenCV',
                'met': None if ratio is None else ratio >= DEGRADE_GOAL,
                'runs': {**cv_runs, **({'medjax_img_s': len(group)}
                                       if len(group) > 1 else {})}})
  return out


def compare_pipeline(rows: Sequence[Row]) -> list[Row]:
  """Real-pipeline vs synthetic-batch steps (pipeline.py end_to_end rows).

  Args:
    rows: all parsed rows.

  Returns:
    One dict per (config, batch): `device_prefetch` (the real feed's depth;
    None in rows without it), `synthetic_step_ms`, `real_step_ms` (medians),
    `ratio` (real / synthetic), `unprefetched_ratio` (the real feed's
    without device prefetch; None if not measured), `goal` (<= 1.10), `met`,
    `runs`.
  """
  out = []
  for (config, batch, prefetch), group in _sorted(_group(
      (r for r in rows if r.get('bench') == 'pipeline'
       and r.get('measure') == 'end_to_end'),
      lambda r: (f"{r.get('model')} {r.get('image_size')}px {r.get('dtype')}"
                 f" ({r.get('dataset')})" + (
                     f" (conv forms {r['conv_forms']})"
                     if r.get('conv_forms', 'auto') != 'auto' else ''),
                 r.get('batch'),
                 r.get('device_prefetch')))):
    synthetic = _median(group, 'synthetic_step_ms')
    real = _median(group, 'real_step_ms')
    ratio = real / synthetic if real is not None and synthetic else None
    out.append({'table': 'pipeline', 'config': config, 'batch': batch,
                'device_prefetch': prefetch, 'synthetic_step_ms': synthetic,
                'real_step_ms': real, 'ratio': ratio, 'unprefetched_ratio':
                _median(group, 'real_unprefetched_ratio'),
                'goal': f'real <= {PIPELINE_GOAL:.2f}x synthetic',
                'met': None if ratio is None else ratio <= PIPELINE_GOAL,
                'runs': {'ratio': len(group)} if len(group) > 1 else {}})
  return out


def largest_batches(rows: Sequence[Row]) -> list[Row]:
  """max_batch.py's result rows; rows without `model`/`largest_batch` skipped.

  Args:
    rows: all parsed rows.

  Returns:
    One dict per (model, dtype): `largest_batch` (median_low of runs),
    `needed_mb`, `limit_mb`, `confirmed` (every run at that batch ran:
    max_batch.py's `run_ok`), `images_per_s` (of that run), `runs`.
  """
  out = []
  for (model, dtype), group in sorted(_group(
      (r for r in rows if r.get('bench') == 'max_batch'
       and r.get('kind') == 'result' and r.get('model')
       and isinstance(r.get('largest_batch'), int)),
      lambda r: (r['model'], r.get('dtype', '-'))).items(),
      key=lambda kv: str(kv[0])):
    out.append({'table': 'max_batch', 'model': model, 'dtype': dtype,
                'largest_batch': statistics.median_low(
                    [r['largest_batch'] for r in group]),
                'needed_mb': _median(group, 'needed_mb'),
                'limit_mb': _median(group, 'limit_mb'),
                'confirmed': all(r.get('run_ok') is True for r in group),
                'images_per_s': _median(group, 'images_per_s'),
                'runs': {'largest_batch': len(group)}
                        if len(group) > 1 else {}})
  return out


def fixed_costs(rows: Sequence[Row]) -> list[Row]:
  """The per-step cost that does not grow with the batch, per train step.

  A line t = fixed + per_image * batch through the median step times at the
  smallest and largest batch of each (workload, dtype) timed at two or more:
  a fixed part near the step time says the step is bound by launching
  kernels (and host work), not by arithmetic.

  Returns:
    One dict per (workload, dtype): `batches` (smallest, largest),
    `step_ms` at each, `fixed_ms`, `per_image_ms`, `fixed_share` (of the
    smallest batch's step) and `host_loop_ms` there (None if not recorded).
  """
  steps = _group((r for r in rows if r.get('bench') == 'train_step'
                  and _workload(r) and r.get('step_ms')),
                 lambda r: (_workload(r), r.get('dtype')))
  out = []
  for (w, d), group in _sorted(steps):
    by_batch = _group(group, lambda r: r['batch'])
    if len(by_batch) < 2:
      continue
    lo, hi = min(by_batch), max(by_batch)
    t_lo, t_hi = (_median(by_batch[b], 'step_ms') for b in (lo, hi))
    per_image = (t_hi - t_lo) / (hi - lo)
    fixed = t_lo - per_image * lo
    out.append({'table': 'fixed_cost', 'workload': w, 'dtype': d,
                'batches': (lo, hi), 'step_ms': (t_lo, t_hi),
                'fixed_ms': fixed, 'per_image_ms': per_image,
                'fixed_share': fixed / t_lo,
                'host_loop_ms': _median(by_batch[lo], 'host_loop_ms'),
                'runs': {}})
  return out


def kernel_costs(rows: Sequence[Row]) -> list[Row]:
  """What each kernel of a train step costs beyond its arithmetic.

  (step time - roofline) / kernels per call, from the medians of each
  (workload, batch, dtype) whose rows carry `roofline_ms` and `kernels`
  (rows timed on a GPU). Under XLA's default CUDA graphs the excess
  holds every separate launch; with the whole step one graph
  (`+CONVOLUTION`, a workload of its own) only what a kernel costs inside
  a graph: the figure that says whether fewer, larger kernels still pay.

  Returns:
    One dict per (workload, batch, dtype): `step_ms`, `roofline_ms`,
    `kernels`, `excess_us_per_kernel`.
  """
  steps = _group((r for r in rows if r.get('bench') == 'train_step'
                  and _workload(r) and r.get('step_ms')
                  and r.get('roofline_ms') and r.get('kernels')),
                 lambda r: (_workload(r), r.get('batch'), r.get('dtype')))
  out = []
  for (w, b, d), group in _sorted(steps):
    step, bound, count = (_median(group, f)
                          for f in ('step_ms', 'roofline_ms', 'kernels'))
    out.append({'table': 'kernel_cost', 'workload': w, 'batch': b,
                'dtype': d, 'step_ms': step, 'roofline_ms': bound,
                'kernels': count,
                'excess_us_per_kernel': 1e3 * (step - bound) / count,
                'runs': {}})
  return out


def build_report(rows: Sequence[Row], commit: str, date: str) -> list[Row]:
  """All tables' rows after a 'session' row.

  Args:
    rows: all parsed rows.
    commit, date: for the header.

  Returns:
    [{'table': 'session', 'devices' (the medjax rows' distinct devices),
    'date', 'commit'}, *compare_steps, *fixed_costs, *kernel_costs,
    *compare_degradations, *compare_pipeline, *largest_batches].
  """
  devices = list(dict.fromkeys(
      str(r['device']) for r in rows
      if r.get('bench', 'reference') != 'reference' and r.get('device')))
  return [{'table': 'session', 'devices': devices, 'date': date,
           'commit': commit}, *compare_steps(rows),
          *fixed_costs(rows), *kernel_costs(rows),
          *compare_degradations(rows), *compare_pipeline(rows),
          *largest_batches(rows)]


def _fmt(fn: Callable[[float], str]) -> Callable[[Any], str]:
  return lambda v: '-' if v is None else v if isinstance(v, str) else fn(v)


IMG_S = _fmt(lambda v: f'{v:,.1f}' if v < 100 else f'{v:,.0f}')
RATIO, PCT = _fmt(lambda v: f'{v:.2f}'), _fmt(lambda v: f'{100 * v:.1f}%')
SEC, MB, MS = (_fmt(lambda v: f'{v:.1f}'), _fmt(lambda v: f'{v:,.0f}'),
               _fmt(lambda v: f'{v:,.1f}'))
YES = {True: 'yes', False: 'no', None: '-'}


def _step_cells(r: Row, c: Callable) -> list[str]:
  missing = [DTYPES[d] for d in r['missing']]
  met = YES[r['met']] + (f" ({', '.join(missing)} not measured)"
                         if r['met'] and missing else '')
  best = IMG_S(r['pytorch_best']) + (
      f" ({TORCH_MODES[r['pytorch_best_mode']]})" if r['pytorch_best'] else '')
  pair = lambda name, f: ' / '.join(f(r[f'{name}_{d}']) for d in DTYPES)
  return [r['workload'], str(r['batch']),
          *(c(r, f'pytorch_{m}', IMG_S) for m in TORCH_MODES), best,
          *(c(r, f'medjax_{d}', IMG_S) for d in DTYPES),
          *(RATIO(r[f'ratio_{d}']) for d in DTYPES), r['goal'], met,
          pair('mfu', PCT), pair('roofline', PCT), pair('compile_s', SEC),
          pair('peak_memory_mb', MB)]


SECTIONS = {  # table: (title, header, cells(row, marked cell))
    'steps': ('Train steps and Inception (img/s)', [
        'workload', 'batch', 'PyTorch fp32 eager',
        'PyTorch bf16 channels-last eager', 'PyTorch bf16 compile',
        'PyTorch best', 'medjax fp32', 'medjax bf16', 'medjax fp32 / best',
        'medjax bf16 / best', 'goal', 'met?', 'medjax MFU (fp32 / bf16)',
        'of roofline (fp32 / bf16)', 'compile s (fp32 / bf16)', 'peak MB (fp32 / bf16)'], _step_cells),
    'fixed_cost': ('Fixed cost per step (a line through two batches)', [
        'workload', 'dtype', 'batches', 'step ms', 'fixed ms',
        'ms per image', 'fixed share', 'host loop ms (smaller batch)'],
        lambda r, c: [
            r['workload'], str(r['dtype']),
            ' / '.join(map(str, r['batches'])),
            ' / '.join(MS(t) for t in r['step_ms']),
            _fmt(lambda v: f'{v:.2f}')(r['fixed_ms']),
            _fmt(lambda v: f'{v:.3f}')(r['per_image_ms']),
            PCT(r['fixed_share']), MS(r['host_loop_ms'])]),
    'kernel_cost': ('Cost per kernel beyond the roofline (GPU rows)', [
        'workload', 'batch', 'dtype', 'step ms', 'roofline ms', 'kernels',
        'us per kernel beyond the roofline'], lambda r, c: [
            r['workload'], str(r['batch']), str(r['dtype']),
            MS(r['step_ms']), _fmt(lambda v: f'{v:.2f}')(r['roofline_ms']),
            _fmt(lambda v: f'{v:.0f}')(r['kernels']),
            _fmt(lambda v: f'{v:.1f}')(r['excess_us_per_kernel'])]),
    'degradations': ('Degradations on device vs OpenCV', [
        'spec', 'batch', 'medjax img/s', 'OpenCV img/s', 'OpenCV figure',
        'ratio', 'goal', 'met?'], lambda r, c: [
            str(r['spec']), str(r['batch']), c(r, 'medjax_img_s', IMG_S),
            c(r, 'opencv_img_s', IMG_S), r['opencv_source'],
            RATIO(r['ratio']), r['goal'], YES[r['met']]]),
    'pipeline': ('Input pipeline: real vs synthetic batches', [
        'config', 'batch', 'device prefetch', 'synthetic step ms',
        'real step ms', 'ratio', 'ratio with prefetch 0', 'goal', 'met?'],
        lambda r, c: [
            r['config'], str(r['batch']), _fmt(str)(r['device_prefetch']),
            MS(r['synthetic_step_ms']), MS(r['real_step_ms']),
            c(r, 'ratio', RATIO), RATIO(r['unprefetched_ratio']), r['goal'],
            YES[r['met']]]),
    'max_batch': ('Largest batch', [
        'model', 'dtype', 'largest batch', 'needed MB', 'limit MB',
        'confirmed by a run', 'img/s at it'], lambda r, c: [
            str(r['model']), str(r['dtype']), c(r, 'largest_batch', str),
            MB(r['needed_mb']), MB(r['limit_mb']), YES[r['confirmed']],
            IMG_S(r['images_per_s'])]),
}


def render(report: Sequence[Row]) -> str:
  """Markdown: the session header, the non-empty tables, the footnote.

  Args:
    report: `build_report`'s rows.

  Returns:
    The markdown text; medians of repeated runs are marked `*`.
  """
  head, notes = report[0], []
  out = [f"Device: {', '.join(head['devices']) or 'unknown'}; date "
         f"{head['date']}; commit {head['commit']}."]
  mark = lambda r, key, f: f(r[key]) + ('*' if key in r['runs'] else '')
  for table, (title, header, cells) in SECTIONS.items():
    rows = [r for r in report if r['table'] == table]
    if rows:
      out += ['', f'### {title}', '', '| ' + ' | '.join(header) + ' |',
              '|' + '---|' * len(header)]
      out += ['| ' + ' | '.join(cells(r, mark)) + ' |' for r in rows]
    notes += [f'{r[k1]} {r[k2]} {k}: median of {n} runs' for r in rows
              for (k1, k2) in [list(r)[1:3]] for k, n in r['runs'].items()]
  if notes:
    out += ['', '\\* Median of repeated runs: ' + '; '.join(notes) + '.']
  return '\n'.join(out) + '\n'


def _git_head() -> str:
  try:
    return subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
        text=True, check=True,
        cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def main(argv: Sequence[str] | None = None) -> list[Row]:
  """Reads the logs; prints markdown, or JSON lines with --json.

  Args:
    argv: the arguments without the program name; None for sys.argv[1:].

  Returns:
    `build_report`'s rows.
  """
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('logs', nargs='+', help='log files with JSON lines')
  parser.add_argument('--commit', help='default: git rev-parse --short HEAD')
  parser.add_argument('--date', default=datetime.date.today().isoformat())
  parser.add_argument('--json', action='store_true',
                      help='one JSON object per table row instead')
  args = parser.parse_args(argv)
  rows = []
  for path in args.logs:
    with open(path, encoding='utf-8', errors='replace') as f:
      rows += parse_rows(f.read())
  report = build_report(rows, args.commit or _git_head(), args.date)
  print('\n'.join(map(json.dumps, report)) if args.json else render(report),
        end='\n' if args.json else '')
  return report


if __name__ == '__main__':
  main()
