r"""Top XLA ops by self time from a jax.profiler trace folder or .tar.gz.

  python bench/trace_summary.py /tmp/prof [--top 25] [--json] [--module M]
  python bench/trace_summary.py prof.tar.gz

Reads the Chrome-trace JSON (`<host>.trace.json.gz`, or the identical
`perfetto_trace.json.gz`) that jax.profiler.trace writes beside its
`<host>.xplane.pb` (the newest one found under the folder or inside the
archive), and sums the self time (an event's duration less that of the
events nested in it on the same thread) of each XLA op:

* GPU/TPU traces: every complete event of the processes named
  `/device:...` (one thread per stream; the op is the event's `hlo_op`
  argument, else its kernel name, e.g. a memcpy); where xprof's derived
  "XLA Ops" lines exist only those are read, so kernels are not counted
  twice. Host-side events (launches, Python) are left out.
* CPU-only traces: XLA's ops run as thunks on the host's threads
  (`tf_XLAEigen/...`, `tf_XLAPjRtCpuClient/...`, or the Python thread); the
  events whose arguments carry `hlo_op` are those thunks. Thunks run
  concurrently on several threads, so their total can exceed the wall time.

Prints a markdown table (rank, op, category, total ms, % of the total op
time, calls, average us) and a total line; per step where the events carry
XLA's `run_id` (one per execution of a module; CPU traces do). `--json`
prints one JSON line per op instead. The category is guessed from the op's
name (the JSON trace has no HLO opcode): e.g. `convolution.3`, `cudnn-conv`
-> convolution; `ynn_fusion` -> the CPU's YNNPACK library fusion (dots and
convolutions); `loop_fusion` -> fusion.

Imports neither jax nor TensorFlow: runs on the files a device run brings
back.
"""

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tarfile

# Checked in order against the lower-cased op name; the first match wins.
CATEGORIES = (
    (r'conv', 'convolution'),
    (r'ynn|xnn', 'YNNPACK/XNNPACK fusion'),
    (r'\bdot|gemm|cublas|matmul', 'dot'),
    (r'triton', 'triton fusion'),
    (r'all-reduce|all-gather|reduce-scatter|all-to-all|collective|nccl',
     'collective'),
    (r'memcpy|memset', 'memcpy'),
    (r'fusion', 'fusion'),
    (r'copy|transpose', 'copy/transpose'),
    (r'reduce', 'reduce'),
    (r'rng|random|threefry', 'random'),
    (r'while|conditional|call', 'control flow'),
)


def category(op: str) -> str:
  """A category guessed from an op's name (see CATEGORIES)."""
  name = op.lower()
  for pattern, cat in CATEGORIES:
    if re.search(pattern, name):
      return cat
  return 'other'


_INSTR = re.compile(r'^\s*(?:ROOT )?%(?P<name>[\w.\-]+) = .*? '
                    r'(?P<opcode>[a-z][\w\-]*)\(')
_COMP = re.compile(r'^\s*(?:ENTRY )?%(?P<name>[\w.\-]+) .*\{\s*$')


def parse_hlo(text: str) -> dict[str, dict[str, dict]]:
  """{module: {instruction: {'opcode', 'detail', 'source'}}} from HLO text.

  `detail` names what a fusion computes (the convolutions, dots and
  custom calls inside it, else its kind) or a custom call's target (e.g.
  __cudnn$convForward); `source` is the JAX op_name metadata without its
  jit(...)/ prefix (e.g. transpose(jvp(Discriminator))/conv3/...).
  """
  comps = collections.defaultdict(list)  # computation -> [(name, info)]
  modules, instrs, comp = {}, {}, None
  for line in text.splitlines():
    if m := re.match(r'HloModule ([\w.\-]+)', line):
      instrs = modules.setdefault(m[1], {})
      continue
    if m := _COMP.match(line):
      comp = m['name']
      continue
    if not (m := _INSTR.match(line)):
      continue
    info = {'opcode': m['opcode'], 'detail': '', 'source': ''}
    if t := re.search(r'custom_call_target="([^"]+)"', line):
      info['detail'] = t[1]
    if c := re.search(r'calls=%([\w.\-]+)', line):
      info['calls'] = c[1]
    if k := re.search(r'kind=(k\w+)', line):
      info['kind'] = k[1]
    if o := re.search(r'op_name="([^"]*)"', line):
      info['source'] = re.sub(r'^jit\([^)]*\)/', '', o[1])
    instrs[m['name']] = info
    comps[id(instrs), comp].append((m['name'], info))
  heavy = ('convolution', 'dot', 'custom-call')
  for instrs in modules.values():
    for info in instrs.values():
      if info['opcode'] == 'fusion':
        called = comps.get((id(instrs), info.get('calls')), [])
        inner = [i['detail'] or i['opcode'] for _, i in called
                 if i['opcode'] in heavy]
        info['detail'] = '+'.join(sorted(set(inner))) or info.get('kind', '')
        if not info['source']:  # Else that of the last fused op with one.
          info['source'] = next((i['source'] for _, i in reversed(called)
                                 if i['source']), '')
      info.pop('calls', None)
      info.pop('kind', None)
  return modules


def hlo_category(info: dict) -> str | None:
  """A category from an op's parsed HLO (None if it says nothing)."""
  what = f"{info['opcode']} {info['detail']}".lower()
  for pattern, cat in (('conv', 'convolution'), (r'\bdot|gemm|matmul', 'dot'),
                       ('triton', 'triton fusion')):
    if re.search(pattern, what):
      return cat
  if info['opcode'] == 'fusion':
    return f"fusion ({info['detail']})" if info['detail'] else 'fusion'
  return info['opcode']


def _hlo_names(names, trace: str):
  """The HLO text files among `names` in a folder above `trace`'s."""
  return sorted(n for n in names if n.endswith(('.hlo.txt', '.hlo.txt.gz'))
                and (not os.path.dirname(n)
                     or trace.startswith(os.path.dirname(n) + '/')))


def _read(data: bytes, name: str) -> str:
  return (gzip.decompress(data) if name.endswith('.gz') else data).decode()


def _trace_json_names(names, where: str):
  """The trace JSON files among `names`, newest first, all of one run.

  jax.profiler.trace(DIR) writes DIR/plugins/profile/<time>/<host>.trace.json.gz;
  traces under several DIRs (e.g. a bench's rows) are an error: name one.
  """
  found = [n for n in names if n.endswith('.trace.json.gz')] or [
      n for n in names if n.endswith('perfetto_trace.json.gz')]
  runs = sorted({n.split('/plugins/profile/')[0] for n in found})
  if len(runs) > 1:
    sys.exit(f'traces of {len(runs)} runs in {where}; name one of: '
             + ' '.join(runs))
  return sorted(found, reverse=True)


def load_trace(path: str) -> tuple[dict, str, str]:
  """The trace JSON at `path`, its file name and any HLO text found with it.

  `path` is a folder (searched recursively), a .tar.gz/.tgz holding one, or
  a trace JSON (.json or .json.gz) itself. The HLO text is that of the
  `*.hlo.txt[.gz]` files in the folder or archive (bench/train_step.py
  writes the step's), '' if none.
  """
  if os.path.isdir(path):
    names = [os.path.join(root, f) for root, _, files in os.walk(path)
             for f in files]
    found = _trace_json_names(names, path)
    if not found:
      xplanes = [n for n in names if n.endswith('.xplane.pb')]
      sys.exit(f'no *.trace.json.gz under {path}' +
               (f' (only {xplanes[0]}: open it with xprof)' if xplanes
                else ''))
    hlo = []
    for name in _hlo_names(names, found[0]):
      with open(name, 'rb') as f:
        hlo.append(_read(f.read(), name))
    with open(found[0], 'rb') as f:
      return json.loads(_read(f.read(), found[0])), found[0], '\n'.join(hlo)
  if path.endswith(('.tar.gz', '.tgz', '.tar')):
    with tarfile.open(path) as tar:
      names = [m.name for m in tar.getmembers() if m.isfile()]
      found = _trace_json_names(names, path)
      if not found:
        sys.exit(f'no *.trace.json.gz in {path}')
      hlo = '\n'.join(_read(tar.extractfile(n).read(), n)
                      for n in _hlo_names(names, found[0]))
      trace = json.loads(_read(tar.extractfile(found[0]).read(), found[0]))
    return trace, f'{path}:{found[0]}', hlo
  with open(path, 'rb') as f:
    return json.loads(_read(f.read(), path)), path, ''


def op_events(trace: dict) -> list[dict]:
  """The complete ('X') events that are XLA ops or device kernels."""
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  process, thread = {}, {}
  for e in events:
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      process[e['pid']] = e.get('args', {}).get('name', '')
    elif e.get('ph') == 'M' and e.get('name') == 'thread_name':
      thread[e['pid'], e.get('tid')] = e.get('args', {}).get('name', '')
  complete = [e for e in events if e.get('ph') == 'X' and 'dur' in e]
  devices = {pid for pid, name in process.items() if '/device:' in name}
  if not devices:
    return [e for e in complete if 'hlo_op' in e.get('args', {})]
  xla_ops = {key for key, name in thread.items()
             if key[0] in devices and name == 'XLA Ops'}
  derived = ('XLA Modules', 'XLA TraceMe', 'Steps', 'Framework Ops',
             'Framework Name Scope', 'Source code')
  return [e for e in complete if e['pid'] in devices and (
      (e['pid'], e.get('tid')) in xla_ops if xla_ops else
      thread.get((e['pid'], e.get('tid'))) not in derived)]


def self_times(events: list[dict]) -> list[tuple[dict, float]]:
  """(event, self time in us): its duration less its children's per thread."""
  by_thread = collections.defaultdict(list)
  for e in events:
    by_thread[e['pid'], e.get('tid')].append(e)
  out = []
  for thread_events in by_thread.values():
    thread_events.sort(key=lambda e: (e['ts'], -e['dur']))
    stack = []  # [event, self time] of the open enclosing events.
    for e in thread_events:
      while stack and e['ts'] >= stack[-1][0]['ts'] + stack[-1][0]['dur']:
        out.append(tuple(stack.pop()))
      if stack:
        stack[-1][1] -= min(e['dur'], stack[-1][0]['ts']
                            + stack[-1][0]['dur'] - e['ts'])
      stack.append([e, float(e['dur'])])
    out.extend(tuple(s) for s in stack)
  return out


def summarise(trace: dict, module: str | None = None,
              hlo_text: str = '') -> dict:
  """Per-op totals: {'ops': [row, ...] by total desc, 'total_us', 'runs'}.

  With `hlo_text` (the executable's HLO), each op found in it is described
  by its HLO (category, `hlo`: opcode and what it computes, `source`: the
  JAX op it came from); otherwise the category is guessed from the name.
  """
  hlo = parse_hlo(hlo_text) if hlo_text else {}
  ops = {}
  runs = collections.defaultdict(set)
  for e, self_us in self_times(op_events(trace)):
    args = e.get('args', {})
    mod = args.get('hlo_module', '')
    if module and module not in mod:
      continue
    op = args.get('hlo_op') or e['name']
    if (mod, op) not in ops:
      info = hlo.get(mod, {}).get(op)
      ops[mod, op] = {
          'module': mod, 'op': op,
          'category': hlo_category(info) if info else category(op),
          'hlo': (f"{info['opcode']}({info['detail']})" if info and
                  info['detail'] else info['opcode'] if info else ''),
          'source': info['source'] if info else '', 'total_us': 0.0,
          'calls': 0, 'kernels': collections.Counter()}
    row = ops[mod, op]
    row['total_us'] += self_us
    row['calls'] += 1
    if e['name'] != op:
      row['kernels'][e['name']] += self_us
    if 'run_id' in args:
      runs[mod].add(args['run_id'])
  total = sum(r['total_us'] for r in ops.values())
  rows = sorted(ops.values(), key=lambda r: -r['total_us'])
  for rank, r in enumerate(rows, 1):
    r['rank'] = rank
    r['percent'] = 100 * r['total_us'] / total if total else 0.0
    r['avg_us'] = r['total_us'] / r['calls']
    r['kernels'] = [k for k, _ in r['kernels'].most_common(3)]
  return {'ops': rows, 'total_us': total,
          'runs': {m: len(ids) for m, ids in runs.items()}}


def _short(row: dict, width: int = 70) -> str:
  """The op's source (else module), shortened from the left to `width`."""
  text = row['source'] or row['module']
  return text if len(text) <= width else '...' + text[-(width - 3):]


def markdown(summary: dict, top: int, source: str) -> str:
  """The table of the `top` ops and a total line."""
  lines = [f'Top XLA ops by self time in {source}', '',
           '| # | op | category | source | total ms | % | calls | avg us |',
           '|---|---|---|---|---|---|---|---|']
  for r in summary['ops'][:top]:
    op = r['op'] + (f" ({', '.join(r['kernels'])})" if r['kernels'] else '')
    lines.append(
        f"| {r['rank']} | {op} | {r['category']} | {_short(r)} | "
        f"{r['total_us'] / 1e3:.3f} | {r['percent']:.1f} | {r['calls']} | "
        f"{r['avg_us']:.1f} |")
  ops = summary['ops']
  shown = sum(r['percent'] for r in ops[:top])
  per_run = []
  for mod, n in sorted(summary['runs'].items()):
    mod_us = sum(r['total_us'] for r in ops if r['module'] == mod)
    per_run.append(f'{mod}: {n} runs, {mod_us / 1e3 / n:.2f} ms/run')
  by_cat = collections.Counter()
  for r in ops:
    by_cat[r['category']] += r['percent']
  lines += ['', 'By category: ' + ', '.join(
      f'{c} {p:.1f}%' for c, p in by_cat.most_common(8)) + '.']
  lines += ['', f"Total: {summary['total_us'] / 1e3:.3f} ms of op self time "
            f"in {len(ops)} ops ({sum(r['calls'] for r in ops)} calls); the "
            f'top {len(ops[:top])} are {shown:.1f}%'
            + (f"; {'; '.join(per_run)}" if per_run else '') + '.']
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('trace', help='trace folder, .tar.gz, or trace JSON')
  parser.add_argument('--top', type=int, default=25,
                      help='how many ops to show (0: all)')
  parser.add_argument('--json', action='store_true',
                      help='one JSON line per op instead of the table')
  parser.add_argument('--module', default=None,
                      help='only ops of HLO modules whose name contains this '
                           '(e.g. jit_train_step)')
  args = parser.parse_args(argv)
  trace, source, hlo_text = load_trace(args.trace)
  summary = summarise(trace, args.module, hlo_text)
  if not summary['ops']:
    sys.exit(f'no XLA op events in {source}')
  top = args.top or len(summary['ops'])
  if args.json:
    for r in summary['ops'][:top]:
      print(json.dumps(r))
  else:
    print(markdown(summary, top, source))
  return summary


if __name__ == '__main__':
  main()
