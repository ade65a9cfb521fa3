"""bench/max_batch.py: the batch search, the run fallback, one tiny run."""

import argparse
import json
import os

import jax
import pytest

from tests.conftest import REPO, load_bench

bench = load_bench('max_batch')
MB = 2**20


def _holds(needed, limit, result, multiple, max_batch):
  """The invariant: needed(b) <= limit < needed(b + multiple), or the cap."""
  b = result.largest
  assert b % multiple == 0 and 0 <= b <= max_batch
  if b:
    assert needed(b) <= limit
  if b + multiple <= max_batch:
    assert needed(b + multiple) > limit


def _counted(fn):
  calls = []

  def needed(b):
    calls.append(b)
    return fn(b)
  return needed, calls


@pytest.mark.parametrize('name,fn,limit', [
    ('linear', lambda b: 300 * MB + 21.5 * MB * b, 60_000 * MB),
    ('quadratic', lambda b: 300 * MB + 20 * MB * b + 0.004 * MB * b * b,
     60_000 * MB),
    # XLA changing its plan above 500 images: a jump in the temporaries.
    ('jump', lambda b: 300 * MB + 20 * MB * b + (2_000 * MB if b > 500
                                                  else 0), 22_000 * MB),
])
def test_search_finds_the_largest_fitting_multiple(name, fn, limit):
  needed, calls = _counted(fn)
  result = bench.search(needed, limit, probes=(16, 64), multiple=8,
                        max_batch=4096)
  assert result.exact, (name, result)
  _holds(fn, limit, result, 8, 4096)
  assert len(calls) == len(set(calls))  # No batch compiled twice.
  assert len(calls) <= 2 + bench.MAX_EXTRA_COMPILES
  if name == 'linear':
    assert len(calls) <= 4  # The probes, the prediction and one above.
  # The brute-force answer.
  assert result.largest == max(b for b in range(8, 4097, 8)
                               if fn(b) <= limit)


def test_search_edge_cases():
  linear = lambda b: 100 + 10 * b
  # Under even one `multiple`: 0 with a note, not an error.
  result = bench.search(linear, 150, probes=(16, 64), multiple=8)
  assert result.largest == 0 and result.exact
  assert 'even batch 8' in result.note
  assert linear(8) > 150
  # The cap: everything fits up to --max_batch (rounded down to multiple).
  result = bench.search(linear, 10**9, probes=(16, 64), multiple=8,
                        max_batch=100)
  assert result.largest == 96 and result.exact and 'capped' in result.note
  # multiple=1 and probes 1 2, as the end-to-end test.
  result = bench.search(linear, 455, probes=(1, 2), multiple=1)
  assert result.largest == 35 and result.exact
  _holds(linear, 455, result, 1, 4096)
  # The bound on compiles: what is known, marked not exact.
  steps = lambda b: 100 + 10 * b + (0 if b < 300 else 10**6)
  result = bench.search(steps, 10**5, probes=(16, 64), multiple=8,
                        max_extra=1)
  assert not result.exact and steps(result.largest) <= 10**5
  assert len(result.needed) == 3
  with pytest.raises(ValueError):
    bench.search(linear, 1000, probes=(4, 4))


def test_confirm_steps_down_on_out_of_memory():
  def run_at(b):
    if b > 40:
      raise jax.errors.JaxRuntimeError(
          'RESOURCE_EXHAUSTED: Out of memory while trying to allocate')
    return {'images_per_s': float(b)}
  assert bench.confirm(run_at, 56, 8)[:2] == (40, {'images_per_s': 40.0})
  batch, timing, failures = bench.confirm(run_at, 96, 8, retries=2)
  assert (batch, timing, len(failures)) == (0, {}, 3)
  with pytest.raises(ValueError):  # Other errors are not swallowed.
    bench.confirm(lambda b: (_ for _ in ()).throw(ValueError('x')), 8, 8)


def test_cpu_needs_a_memory_limit():
  with pytest.raises(SystemExit):
    bench.main(['--dtypes', 'float32'])


def test_main_finds_and_runs_a_tiny_srresnet_batch(capsys):
  rows = bench.main([
      f'--config={os.path.join(REPO, "configs", "srresnet_brain.py")}',
      '--config.model.sr.num_blocks=1', '--config.model.sr.features=8',
      '--config.sr.hr_crop=16', '--dtypes', 'float32',
      '--probe', '1', '2', '--multiple', '1', '--run_steps', '1',
      '--memory_limit_mb', '0.8'])
  out = capsys.readouterr().out
  lines = [json.loads(line) for line in out.splitlines()
           if line.startswith('{')]
  probes = {r['batch']: r for r in lines if r['kind'] == 'probe'}
  (result,) = [r for r in lines if r['kind'] == 'result']
  assert result == json.loads(json.dumps(rows[0]))
  assert 'largest batch' in out  # The table.
  b = result['largest_batch']
  assert b >= 1 and result['exact'] and result['run_ok']
  assert result['model'] == 'srresnet' and result['image_size'] == 16
  # The invariant, from the printed compiled figures.
  assert probes[b]['fits'] and probes[b]['needed_mb'] <= 0.8
  assert not probes[b + 1]['fits'] and probes[b + 1]['needed_mb'] > 0.8
  assert result['needed_mb'] == probes[b]['needed_mb']
  # needed = arguments + outputs - aliased (the donated state) + temps.
  p = probes[b]
  assert p['needed_mb'] == pytest.approx(
      p['step_argument_mb'] + p['step_output_mb'] - p['step_alias_mb']
      + p['step_temp_mb'])
  assert p['step_alias_mb'] > 0
  assert result['images_per_s'] > 0 and result['peak_memory_mb'] > 0
  assert result['probe_compiles'] == len(probes) <= 4
  assert result['method'] == 'xla memory_analysis + run'


def test_main_steps_down_when_the_run_runs_out_of_memory(capsys, monkeypatch):
  """XLA's figures say 2 fits (the cap); the device (a stub) says no."""
  compile_timed = bench.benchlib.compile_timed

  def small_device(jitted, *args):
    compiled, *rest = compile_timed(jitted, *args)

    def call(state, batch, rng, consts):
      if batch['image'].shape[0] > 1:
        raise jax.errors.JaxRuntimeError(
            'RESOURCE_EXHAUSTED: Out of memory while trying to allocate')
      return compiled(state, batch, rng, consts)
    return call, *rest
  monkeypatch.setattr(bench.benchlib, 'compile_timed', small_device)
  (row,) = bench.main([
      f'--config={os.path.join(REPO, "configs", "srresnet_brain.py")}',
      '--config.model.sr.num_blocks=1', '--config.model.sr.features=8',
      '--config.sr.hr_crop=16', '--dtypes', 'float32',
      '--probe', '1', '2', '--multiple', '1', '--run_steps', '1',
      '--max_batch', '2', '--memory_limit_mb', '100'])
  assert row['xla_largest_batch'] == 2 and row['exact']
  assert 'capped by --max_batch=2' in row['note']
  assert row['largest_batch'] == 1 and row['run_ok']
  assert row['images_per_s'] > 0 and len(row['run_failures']) == 1
  assert 'RESOURCE_EXHAUSTED' in row['run_failures'][0]
  assert 'ran out of memory above 1' in row['note']
  out = capsys.readouterr().out
  probes = [json.loads(l) for l in out.splitlines() if l.startswith('{')
            and json.loads(l)['kind'] == 'probe']
  assert probes[-1]['batch'] == 1
  assert probes[-1]['note'] == 'compiled for the run'


def _tiny_srresnet_argv():
  return [f'--config={os.path.join(REPO, "configs", "srresnet_brain.py")}',
          '--config.model.sr.num_blocks=1', '--config.model.sr.features=8',
          '--config.sr.hr_crop=16']


def test_abstract_arguments_give_the_concrete_figures():
  """--target_config's path (abstract state and batch on a sharding, so the
  step compiles for a device this machine lacks), checked here on the CPU
  device against the path that builds a real state."""
  config = bench.train_step.step_config(_tiny_srresnet_argv(), 'float32')
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  rows = []
  concrete = bench._Step(config, 1, 10 * MB, 1, 8, rows.append)
  abstract = bench._Step(config, 1, 10 * MB, 1, 8, rows.append, cpu)
  assert all(isinstance(x, jax.ShapeDtypeStruct)
             for x in jax.tree.leaves((abstract.state, abstract.consts)))
  for b in (1, 3):
    assert abstract.spec(b)['image'].sharding == cpu
    assert abstract.needed(b) == concrete.needed(b)
  assert [r['batch'] for r in rows] == [1, 1, 3, 3]
  # The search on that path: the figures above, nothing run.
  args = argparse.Namespace(multiple=1, max_batch=8, probe=[1, 2],
                            max_extra_compiles=6, run_steps=0,
                            target_config='gpu.txtpb')
  limit = (concrete.figures[1] + concrete.figures[3]) / 2
  row = bench.find(config, args, limit, 'test', rows.append, cpu)
  assert row['largest_batch'] in (1, 2) and row['exact']
  assert row['run_ok'] is None and row['target_config'] == 'gpu.txtpb'
  assert row['method'] == 'xla memory_analysis, deviceless compile'
  assert row['device'].endswith('(compiled here, not run)')


def test_target_memory_limit(tmp_path, monkeypatch):
  target = tmp_path / 'gpu.txtpb'
  target.write_text('gpu_device_info {\n  device_memory_size: 4194304000\n}\n')
  monkeypatch.delenv('XLA_PYTHON_CLIENT_MEM_FRACTION', raising=False)
  limit, source = bench.target_memory_limit(str(target), None)
  assert limit == 3145728000 and '0.75' in source and '4000 MB' in source
  monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.5')
  assert bench.target_memory_limit(str(target), None)[0] == 2097152000
  assert bench.target_memory_limit(str(target), 10)[0] == 10 * MB
  # The shipped targets: an H100's 80 GB and the H200's implied 143,157 MB.
  for name, mb in (('h100_sxm.txtpb', 81042), ('h200.txtpb', 143157)):
    total = bench.gpu_hlo.device_memory_bytes(os.path.join(REPO, 'bench',
                                                           name))
    assert round(total / MB) == mb
  target.write_text('gpu_device_info {\n}\n')
  with pytest.raises(ValueError, match='device_memory_size'):
    bench.target_memory_limit(str(target), None)


def test_target_config_compiles_only():
  with pytest.raises(SystemExit):
    bench.main(_tiny_srresnet_argv() + [
        '--target_config', os.path.join(REPO, 'bench', 'h100_sxm.txtpb'),
        '--run_steps', '1'])
