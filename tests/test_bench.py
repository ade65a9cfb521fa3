"""The benchmark scripts run (speed itself is measured in bench/, never here)."""

import json
import os
import re

import pytest

from tests.conftest import REPO, load_bench, tiny_flags
from tests.test_sr import sr_config




def test_train_step_bench_times_the_srgan_step(tmp_path):
  bench = load_bench('train_step')
  config = sr_config(str(tmp_path), **{
      'model.name': 'srgan', 'sr.content_loss': 'vgg',
      'dataset.image_size': 16})
  row = bench.measure(config, batch_size=2, steps=1, warmup=0)
  assert row['model'] == 'srgan' and row['images_per_s'] > 0
  assert row['gflop_per_image'] > 0 and row['tflops_achieved'] > 0
  # No bf16 peak is known for a CPU, so no utilisation is claimed there.
  assert row['peak_bf16_tflops'] is None and row['mfu'] is None


def test_metrics_bench_cases_run():
  bench = load_bench('metrics')
  for row in (bench.bench_ssim(2, iters=1, warmup=0),
              bench.bench_lpips('alex', 1, iters=1, warmup=0)):
    assert row['images_per_s'] > 0 and row['compile_s'] >= 0
    assert row['gflop_per_image'] > 0 and 'mfu' in row


def test_time_stateless_times_the_call_not_copies_of_its_arguments():
  """numpy arguments (InceptionV3's converted weights) go to the device once
  before the timed calls, not implicitly with each of them."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  benchlib = load_bench('benchlib')
  w = {'a': np.ones((8, 8), np.float32), 'b': np.arange(8, dtype=np.float32)}
  with jax.transfer_guard_host_to_device('disallow'):
    timing = benchlib.time_stateless(lambda w: w['a'] @ w['b'], (w,), 2, 1)
  np.testing.assert_array_equal(timing['output'], np.full(8, 28.0))


def test_utilisation_uses_the_chip_peak(monkeypatch):
  benchlib = load_bench('benchlib')
  assert benchlib.peak_tflops('NVIDIA H100 80GB HBM3') == 989.4
  assert benchlib.peak_tflops('NVIDIA H100 PCIe') == 756.0
  assert benchlib.peak_tflops('NVIDIA H200') == 989.4
  assert benchlib.peak_tflops('cpu') is None
  u = benchlib.utilisation(2 * 989.4e12, 4.0, 'NVIDIA H200')
  assert u['tflops_achieved'] == 2 * 989.4 / 4 and u['mfu'] == 0.5
  monkeypatch.setenv('MEDJAX_PEAK_TFLOPS', '100')
  assert benchlib.utilisation(50e12, 1.0, 'cpu')['mfu'] == 0.5


def test_utilisation_without_a_peak_measures_against_a_matmul():
  """A CPU has no data-sheet peak: the row says how far it is from what
  XLA reaches here on a large matrix product, timed in the process."""
  benchlib = load_bench('benchlib')
  matmul = benchlib.matmul_tflops(n=256, repeats=2)
  assert 0 < matmul < 1e3
  benchlib.matmul_tflops = lambda: 0.2  # Pin it: timings vary.
  u = benchlib.utilisation(0.05e12, 1.0)
  assert u['mfu'] is None and u['matmul_tflops'] == 0.2
  assert u['of_matmul'] == 0.25
  assert benchlib.utilisation_cell(u) == '25.0% of matmul'
  assert 'of_matmul' not in benchlib.utilisation(0.05e12, 1.0, 'cpu')


def test_compile_timed_counts_the_model_flops():
  """FLOPs come from the lowered program, the model as written: a 3x3
  VALID convolution's 2*N*Ho*Wo*k*k*Cin*Cout (XLA counts only the taps
  inside the image; optimized GPU programs hide their
  convolutions in cuDNN calls the cost analysis skips)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  benchlib = load_bench('benchlib')
  x = jax.ShapeDtypeStruct((2, 8, 8, 4), 'float32')
  w = jax.ShapeDtypeStruct((3, 3, 4, 16), 'float32')
  conv = jax.jit(lambda x, w: lax.conv_general_dilated(
      x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  _, compile_s, flops, memory = benchlib.compile_timed(conv, x, w)
  assert flops == 2 * 2 * 6 * 6 * 3 * 3 * 4 * 16
  assert compile_s > 0 and memory['output_mb'] == 2 * 6 * 6 * 16 * 4 / 2**20


def test_compile_timed_falls_back_when_the_lowered_stage_refuses(
    monkeypatch):
  """jax 0.11 refuses the lowered cost analysis of a GPU target compiled
  without a GPU: the compiled stage's count is used, and nothing fails."""
  import jax  # pylint: disable=g-import-not-at-top
  benchlib = load_bench('benchlib')

  def refuse(self):
    raise jax.errors.JaxRuntimeError('implemented for a PjRt-compatible '
                                     'backend only')

  monkeypatch.setattr(jax.stages.Lowered, 'cost_analysis', refuse)
  square = jax.jit(lambda a: a @ a)
  _, _, flops, memory = benchlib.compile_timed(
      square, jax.ShapeDtypeStruct((8, 8), 'float32'))
  assert flops == 2 * 8 * 8 * 8 and memory['output_mb'] > 0
  monkeypatch.setattr(jax.stages.Compiled, 'cost_analysis', refuse)
  _, _, flops, _ = benchlib.compile_timed(
      square, jax.ShapeDtypeStruct((8, 8), 'float32'))
  assert flops != flops  # nan: neither stage reports it


def test_pipeline_bench_prints_host_step_and_end_to_end_rows(
    data_dir, capsys):
  bench = load_bench('pipeline')
  rows = bench.main([
      f'--config={os.path.join(REPO, "configs", "dcgan_brain.py")}',
      '--batch_size=4', '--steps=2', '--warmup=1', '--host_batches=2',
      '--host_warmup=1', '--config.device_prefetch=1',
      '--config.pack_state=true', *tiny_flags(data_dir)])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith('{')]
  assert lines == json.loads(json.dumps(rows))
  by = {(r['measure'], r.get('source')): r for r in lines}
  assert set(by) == {('host', None), ('step', 'synthetic'), ('step', 'real'),
                     ('step', 'real_unprefetched'), ('end_to_end', None)}
  host = by['host', None]
  assert host['batch_shape'] == [4, 16, 16, 1] and host['images_per_s'] > 0
  assert host['pipeline_defaults'] and host['grain_num_threads'] >= 1
  for source in ('synthetic', 'real', 'real_unprefetched'):
    assert by['step', source]['step_ms'] > 0
  assert by['step', 'real']['device_prefetch'] == 1
  e2e = by['end_to_end', None]
  for key in ('synthetic_step_ms', 'real_step_ms', 'ratio', 'compile_s',
              'peak_memory_mb', 'peak_memory_source', 'step_temp_mb',
              'loadavg', 'device', 'date'):
    assert key in e2e, key
  assert e2e['ratio'] > 0 and e2e['peak_memory_mb'] > 0
  assert len(e2e['loadavg']) == 3


def test_train_step_bench_cli_takes_config_overrides(data_dir, capsys):
  bench = load_bench('train_step')
  rows = bench.main([
      f'--config={os.path.join(REPO, "configs", "dcgan_brain.py")}',
      '--batch_size', '2', '--dtypes', 'float32', '--steps=1', '--warmup=0',
      '--pack_state', 'off', 'on', *tiny_flags(data_dir)])
  out = capsys.readouterr().out
  leaves, packed = [json.loads(l) for l in out.splitlines()
                    if l.startswith('{')]
  assert [leaves, packed] == json.loads(json.dumps(rows))
  for row in (leaves, packed):
    assert row['image_size'] == 16 and row['batch'] == 2
    assert row['peak_memory_mb'] > 0 and 'step_temp_mb' in row
  # The same step, its state passed as leaves or as the float32 and int32
  # flat arrays.
  assert not leaves['pack_state'] and leaves['state_arrays'] > 20
  assert leaves['state_kernel_layout'] == 'hwio'
  assert packed['pack_state'] and packed['state_arrays'] == 2
  assert packed['gflop_per_image'] == leaves['gflop_per_image']


def test_train_step_bench_feeds_labels_to_the_labelled_tasks(data_dir):
  bench = load_bench('train_step')
  config = bench.benchlib.load_config([
      f'--config={os.path.join(REPO, "configs", "cdcgan_brain.py")}',
      *tiny_flags(data_dir)])
  row = bench.measure(config, batch_size=2, steps=1, warmup=0)
  assert row['model'] == 'cdcgan' and row['images_per_s'] > 0


@pytest.mark.parametrize('name,labelled', [('dcgan_brain', False),
                                            ('cdcgan_brain', True)])
def test_gpu_hlo_abstract_step_feeds_labels_to_conditional_models(
    name, labelled):
  """The compile-only step gets the batch its trainer reads: images, and
  labels where the model is conditional (StarGAN, cDCGAN, classifiers)."""
  import jax
  from medjax import config_lib
  bench = load_bench('gpu_hlo')
  config = config_lib.load_config_file(f'{REPO}/configs/{name}.py')
  sharding = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  jitted, state, data, key, consts = bench.abstract_step(config, 2, sharding)
  assert ('label' in data) == labelled
  _, metrics = jax.eval_shape(jitted, state, data, key, consts)
  assert metrics


def test_gpu_hlo_census_counts_launches_not_bookkeeping():
  bench = load_bench('gpu_hlo')
  hlo = '''HloModule m, is_scheduled=true

%fused_add (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %a = f32[4]{0} add(%p, %p)
}

%body (t: (s32[], f32[4])) -> (s32[], f32[4]) {
  %t = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = f32[4]{0} get-tuple-element(%t), index=1
  %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_add
  ROOT %r = (s32[], f32[4]{0}) tuple(%i, %f)
}

%command_buffer (q: f32[4]) -> f32[4] {
  %q = f32[4]{0} parameter(0)
  %g = f32[4]{0} fusion(%q), kind=kInput, calls=%fused_add
  ROOT %h = f32[4]{0} fusion(%g), kind=kCustom, calls=%fused_add, backend_config={"fusion_backend_config":{"kind":"__triton_gemm"}}
}

ENTRY %main (x: f32[4], w: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  %w = f32[4]{0} parameter(1)
  %c = (f32[4]{0}, u8[0]{0}) custom-call(%x, %w), custom_call_target="__cudnn$convForward"
  %y = f32[4]{0} get-tuple-element(%c), index=0
  %z = f32[4]{0} copy(%y)
  %k = s32[] constant(0)
  %t = (s32[], f32[4]{0}) tuple(%k, %z)
  %l = (s32[], f32[4]{0}) while(%t), condition=%body, body=%body
  %o = f32[4]{0} get-tuple-element(%l), index=1
  ROOT %cb = f32[4]{0} call(%o), to_apply=%command_buffer
}
'''
  counts = bench.census(hlo)
  assert counts == {'custom-call:__cudnn$convForward': 1, 'copy': 1,
                    'while': 1, 'fusion:kLoop': 1, 'command_buffer': 1,
                    'fusion:kInput': 1, 'fusion:kCustom:__triton_gemm': 1}
  assert bench.kernels(counts) == 5


def test_gpu_hlo_thunks_count_what_the_host_launches():
  """XLA's thunk sequence (an H100 dump's format): top-level thunks are
  launched one by one, a CUDA graph's commands (indented) in one go."""
  bench = load_bench('gpu_hlo')
  text = """\
001: kCustomKernel  [source        | next=002 (1) ] loop_xor_fusion grid: [1, 1, 1] threads: [2, 1, 1]  shared_memory: 0 bytes
002: kConvolution   [prev=001 (1)  | next=000 (1) ] kConvolution
000: kCommandBuffer [prev=002 (1)  | next=006 (1) ] 
    003: kCustomKernel [source       | next=004 (1)] input_reduce_fusion grid: [512, 1, 1] threads: [1024, 1, 1]  shared_memory: 0 bytes
    004: kCustomKernel [prev=003 (1) | next=005 (1)] loop_multiply_fusion grid: [4, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
    005: kCopy [prev=004 (1) | sink        ] copy
006: kConvolution   [prev=000 (1)  | sink         ] kConvolution
"""
  assert bench.thunks(text) == {'launches': 4, 'graphs': 1, 'in_graphs': 3}
  assert bench.thunks('') == {'launches': 0, 'graphs': 0, 'in_graphs': 0}


def test_shipped_gpu_targets_carry_a_driver_that_can_trace_into_graphs():
  """Without CUDA versions in the target XLA takes the driver for older than
  12.3 and drops traced commands (cuDNN convolutions, cuBLAS) from CUDA
  graphs whatever the flags ask, so launch counts compiled here would not be
  the device's (bench/NOTES.md, 2026-12-06, ninth session)."""
  for name in ('h100_sxm.txtpb', 'h200.txtpb'):
    with open(os.path.join(REPO, 'bench', name)) as f:
      text = f.read()
    for field in ('driver_version', 'runtime_version',
                  'compile_time_toolkit_version'):
      m = re.search(rf'^\s*{field}:\s*"(\d+)\.(\d+)\.(\d+)"', text, re.M)
      assert m, (name, field)
      assert tuple(map(int, m.groups())) >= (12, 3, 0), (name, field)


def test_gpu_hlo_roofline_charges_flops_and_bytes_per_kernel():
  """Each kernel: max(FLOPs / peak of its operand type, bytes / bandwidth);
  cuDNN scratch is not traffic, an operand read twice is read once, and
  the kernels inside a command buffer count like the others."""
  bench = load_bench('hlo_cost')
  hlo = '''HloModule m, is_scheduled=true

%fused_add (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %a = f32[4]{0} add(%p, %p)
}

%gemm (a: bf16[8,32], b: bf16[32,16]) -> f32[8,16] {
  %a = bf16[8,32]{1,0} parameter(0)
  %b = bf16[32,16]{1,0} parameter(1)
  ROOT %d = f32[8,16]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%command_buffer (q: f32[4]) -> f32[4] {
  %q = f32[4]{0} parameter(0)
  ROOT %g = f32[4]{0} fusion(%q), kind=kLoop, calls=%fused_add
}

ENTRY %main (x: bf16[2,8,8,4], w: bf16[6,3,3,4], a: bf16[8,32], b: bf16[32,16], v: f32[4]) -> f32[4] {
  %x = bf16[2,8,8,4]{3,2,1,0} parameter(0)
  %w = bf16[6,3,3,4]{3,2,1,0} parameter(1)
  %a = bf16[8,32]{1,0} parameter(2)
  %b = bf16[32,16]{1,0} parameter(3)
  %v = f32[4]{0} parameter(4)
  %c = (bf16[2,8,8,6]{3,2,1,0}, u8[4096]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
  %y = bf16[2,8,8,6]{3,2,1,0} get-tuple-element(%c), index=0
  %dx = (bf16[2,8,8,4]{3,2,1,0}, u8[64]{0}) custom-call(%y, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"
  %m = f32[8,16]{1,0} fusion(%a, %b), kind=kCustom, calls=%gemm, backend_config={"fusion_backend_config":{"kind":"__triton_gemm"}}
  %l = (bf16[8,16]{1,0}, s8[256]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}
  ROOT %cb = f32[4]{0} call(%v), to_apply=%command_buffer
}
'''
  got = bench.roofline(hlo, bandwidth=1e9, peaks={'bf16': 1e8, 'f32': 1e7})
  conv_flops = 2 * (2 * 8 * 8 * 6) * (3 * 3 * 4)  # Output x taps x inputs.
  conv_bytes = 2 * (2 * 8 * 8 * 4 + 6 * 3 * 3 * 4 + 2 * 8 * 8 * 6)
  gemm_flops, gemm_bytes = 2 * 8 * 16 * 32, 2 * (8 * 32 + 32 * 16) + 4 * 128
  add_bytes = 4 * 4 + 4 * 4
  cublas_bytes = 2 * (8 * 32 + 32 * 16) + 2 * 128  # Its workspace is not.
  dx_bytes = conv_bytes  # Reads y and w, writes dx.
  assert got['gflop'] * 1e9 == pytest.approx(2 * conv_flops + 2 * gemm_flops)
  assert got['gbyte'] * 1e9 == pytest.approx(
      conv_bytes + dx_bytes + gemm_bytes + cublas_bytes + add_bytes)
  want = {
      'custom-call:__cudnn$convForward': max(conv_flops / 1e8,
                                             conv_bytes / 1e9),
      'custom-call:__cudnn$convBackwardInput': max(conv_flops / 1e8,
                                                   dx_bytes / 1e9),
      'fusion:kCustom:__triton_gemm': max(gemm_flops / 1e8, gemm_bytes / 1e9),
      'custom-call:__cublas$gemm': max(gemm_flops / 1e8, cublas_bytes / 1e9),
      'fusion:kLoop': add_bytes / 1e9}
  assert got['roofline_ms_by_category'] == pytest.approx(
      {k: 1e3 * v for k, v in want.items()})
  assert got['roofline_ms'] == pytest.approx(1e3 * sum(want.values()))
  assert got['roofline_ms'] >= max(got['compute_ms'], got['memory_ms'])


def test_zero_dilated_finds_kernels_that_insert_zeros():
  """A pad with interior padding (zeros between elements), fused or not,
  is a zero-dilated tensor; edge padding alone is not."""
  bench = load_bench('hlo_cost')
  hlo = '''HloModule m, is_scheduled=true

%dilate (p: bf16[2,4,4,8]) -> bf16[2,11,11,8] {
  %p = bf16[2,4,4,8]{3,2,1,0} parameter(0)
  %z = bf16[] constant(0)
  ROOT %d = bf16[2,11,11,8]{3,2,1,0} pad(%p, %z), padding=0_0x2_2_1x2_2_1x0_0
}

%edges (q: bf16[2,4,4,8]) -> bf16[2,6,6,8] {
  %q = bf16[2,4,4,8]{3,2,1,0} parameter(0)
  %z = bf16[] constant(0)
  ROOT %e = bf16[2,6,6,8]{3,2,1,0} pad(%q, %z), padding=0_0x1_1x1_1x0_0
}

%outer (r: bf16[2,4,4,8]) -> bf16[2,11,11,8] {
  %r = bf16[2,4,4,8]{3,2,1,0} parameter(0)
  ROOT %n = bf16[2,11,11,8]{3,2,1,0} fusion(%r), kind=kLoop, calls=%dilate
}

ENTRY %main (x: bf16[2,4,4,8]) -> bf16[2,11,11,8] {
  %x = bf16[2,4,4,8]{3,2,1,0} parameter(0)
  %z = bf16[] constant(0)
  %a = bf16[2,11,11,8]{3,2,1,0} fusion(%x), kind=kLoop, calls=%dilate
  %b = bf16[2,6,6,8]{3,2,1,0} fusion(%x), kind=kLoop, calls=%edges
  %c = bf16[2,11,11,8]{3,2,1,0} fusion(%x), kind=kLoop, calls=%outer
  ROOT %d = bf16[2,11,11,8]{3,2,1,0} pad(%x, %z), padding=0_0x2_2_1x2_2_1x0_0
}
'''
  got = bench.zero_dilated(hlo)
  assert got['zero_dilated_kernels'] == 3  # a, c (nested) and d; not b.
  assert got['zero_dilated_gbyte'] * 1e9 == 3 * 2 * (2 * 11 * 11 * 8)
  assert bench.zero_dilated(hlo.replace('2_2_1', '2_2_0'))[
      'zero_dilated_kernels'] == 0


def test_rows_timed_on_a_gpu_carry_the_roofline():
  """A row's roofline uses its chip's bandwidth and peaks, and the fraction
  is the bound over the measured time; CPUs get none."""
  benchlib = load_bench('benchlib')

  class Compiled:
    def as_text(self):
      return """HloModule m

%fused_neg (p: f32[1000]) -> f32[1000] {
  %p = f32[1000]{0} parameter(0)
  ROOT %n = f32[1000]{0} negate(%p)
}

ENTRY %main (x: f32[1000]) -> f32[1000] {
  %x = f32[1000]{0} parameter(0)
  ROOT %f = f32[1000]{0} fusion(%x), kind=kLoop, calls=%fused_neg
}
"""
  got = benchlib.roofline(Compiled(), 1e-3, 'NVIDIA H200')
  assert got['roofline_ms'] == pytest.approx(1e3 * 8000 / 4.8e12)
  assert got['zero_dilated_kernels'] == 0
  assert got['kernels'] == 1
  assert got['roofline_fraction'] == pytest.approx(8000 / 4.8e12 / 1e-3)
  assert benchlib.roofline(Compiled(), 1e-3, 'NVIDIA H100 PCIe')[
      'roofline_ms'] == pytest.approx(1e3 * 8000 / 2.0e12)
  assert benchlib.roofline(Compiled(), 1e-3, 'cpu') == {}
  broken = Compiled()
  broken.as_text = lambda: (  # A convolution of an undefined operand.
      'ENTRY %main () -> f32[4] {\n  %c = (f32[4]) custom-call(%y), '
      'custom_call_target="__cudnn$convForward"\n}')
  assert 'roofline_error' in benchlib.roofline(broken, 1e-3, 'NVIDIA H200')
