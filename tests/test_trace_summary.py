"""bench/trace_summary.py reads a real jax.profiler trace (CPU) and a GPU-shaped one."""

import json
import tarfile

import jax
import jax.numpy as jnp
import pytest

from tests.conftest import load_bench

ts = load_bench('trace_summary')


@pytest.fixture(scope='module')
def trace_dir(tmp_path_factory):
  """A trace of 3 calls of a jitted conv + matmul, with its HLO text
  (`benchlib.trace`, as the bench scripts write them)."""

  def f(x, w, m):
    y = jax.lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.tanh(jax.nn.relu(y).reshape(y.shape[0], -1) @ m).sum()

  args = (jnp.ones((4, 16, 16, 3)), jnp.ones((3, 3, 3, 8)),
          jnp.ones((16 * 16 * 8, 32)))
  compiled = jax.jit(f).lower(*args).compile()
  compiled(*args).block_until_ready()
  path = str(tmp_path_factory.mktemp('trace'))
  load_bench('benchlib').trace(
      path, compiled, lambda: [compiled(*args) for _ in range(3)])
  return path


def test_summary_of_a_cpu_trace_finds_the_conv_and_dot(trace_dir, capsys):
  summary = ts.main([trace_dir, '--top', '5'])
  table = capsys.readouterr().out
  ops = summary['ops']
  cats = {r['category'] for r in ops if r['module'] == 'jit_f'}
  assert {'convolution', 'dot'} <= cats, ops
  for r in ops:
    if r['category'] in ('convolution', 'dot'):
      assert r['total_us'] > 0 and r['calls'] == 3
      assert 'conv_general_dilated' in r['source'] or 'dot' in r['source']
  assert sum(r['percent'] for r in ops) == pytest.approx(100)
  assert summary['runs']['jit_f'] == 3
  assert '| 1 |' in table and 'Total:' in table and 'jit_f: 3 runs' in table


def test_summary_reads_a_tar_gz_and_prints_json(trace_dir, tmp_path, capsys):
  archive = str(tmp_path / 'prof.tar.gz')
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(trace_dir, arcname='prof')
  ts.main([archive, '--json', '--top', '0', '--module', 'jit_f'])
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert rows and all(r['module'] == 'jit_f' for r in rows)
  assert {'convolution', 'dot'} <= {r['category'] for r in rows}


def test_gpu_trace_counts_device_kernels_once_by_self_time():
  meta = [
      {'ph': 'M', 'pid': 1, 'name': 'process_name',
       'args': {'name': '/host:CPU'}},
      {'ph': 'M', 'pid': 2, 'name': 'process_name',
       'args': {'name': '/device:GPU:0'}},
      {'ph': 'M', 'pid': 2, 'tid': 7, 'name': 'thread_name',
       'args': {'name': 'Stream #7(Compute)'}},
      {'ph': 'M', 'pid': 2, 'tid': 8, 'name': 'thread_name',
       'args': {'name': 'XLA Modules'}},
  ]
  hlo = {'hlo_module': 'jit_step', 'hlo_op': 'cudnn-conv.1'}
  events = [
      # A host-side launch annotated with the same op: not device time.
      {'ph': 'X', 'pid': 1, 'tid': 1, 'ts': 0, 'dur': 50, 'name': 'Thunk',
       'args': hlo},
      {'ph': 'X', 'pid': 2, 'tid': 8, 'ts': 0, 'dur': 100,
       'name': 'jit_step', 'args': {}},
      {'ph': 'X', 'pid': 2, 'tid': 7, 'ts': 0, 'dur': 30,
       'name': 'sm90_xmma_fprop_kernel', 'args': hlo},
      {'ph': 'X', 'pid': 2, 'tid': 7, 'ts': 40, 'dur': 10,
       'name': 'loop_fusion',
       'args': {'hlo_module': 'jit_step', 'hlo_op': 'loop_fusion'}},
      {'ph': 'X', 'pid': 2, 'tid': 7, 'ts': 60, 'dur': 10,
       'name': 'Memcpy DtoD', 'args': {}},
  ]
  summary = ts.summarise({'traceEvents': meta + events})
  got = {r['op']: (r['category'], r['total_us']) for r in summary['ops']}
  assert got == {'cudnn-conv.1': ('convolution', 30),
                 'loop_fusion': ('fusion', 10),
                 'Memcpy DtoD': ('memcpy', 10)}
  assert summary['ops'][0]['kernels'] == ['sm90_xmma_fprop_kernel']


def test_self_time_subtracts_nested_events():
  events = [{'ph': 'X', 'pid': 1, 'tid': 1, 'ts': 0, 'dur': 100,
             'name': 'while', 'args': {'hlo_op': 'while.1'}},
            {'ph': 'X', 'pid': 1, 'tid': 1, 'ts': 10, 'dur': 30,
             'name': 'dot', 'args': {'hlo_op': 'dot.2'}},
            {'ph': 'X', 'pid': 1, 'tid': 1, 'ts': 50, 'dur': 20,
             'name': 'dot', 'args': {'hlo_op': 'dot.2'}}]
  summary = ts.summarise({'traceEvents': events})
  got = {r['op']: (r['total_us'], r['calls']) for r in summary['ops']}
  assert got == {'while.1': (50, 1), 'dot.2': (50, 2)}


def test_inception_bench_profile_is_summarised(tmp_path, capsys):
  """bench/metrics.py --profile_dir traces InceptionV3 calls that
  trace_summary reads, with each op's source from the saved HLO."""
  row = load_bench('metrics').bench_inception(1, 'float32', iters=1,
                                              warmup=0,
                                              profile_dir=str(tmp_path))
  assert row['profile'] == str(tmp_path / 'inception_1_float32')
  summary = ts.main([row['profile'], '--top', '5'])
  assert 'Top XLA ops' in capsys.readouterr().out
  assert any('Mixed_' in r['source'] for r in summary['ops'])
