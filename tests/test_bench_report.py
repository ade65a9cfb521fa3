"""bench/report.py: session logs -> comparison tables (no jax, no device)."""

import json

import numpy as np
import pytest

from tests.conftest import load_bench




report = load_bench('report')
H100 = 'NVIDIA H100 80GB HBM3'


def _torch(case, bs, mode, img_s=None, error=None):
  if error:
    return {'case': case, 'bs': bs, 'mode': mode, 'error': error}
  return {'case': case, 'bs': bs, 'mode': mode, 'step_ms': 1e3 * bs / img_s,
          'img_s': img_s}


def _train(model, size, batch, dtype, img_s, **extra):
  return {'bench': 'train_step', 'model': model, 'image_size': size,
          'batch': batch, 'dtype': dtype, 'images_per_s': img_s,
          'step_ms': 1e3 * batch / img_s, 'compile_s': 10.0, 'mfu': 0.25,
          'roofline_fraction': 0.4, 'peak_memory_mb': 2048.0, 'device': H100, **extra}


def _log(*rows):
  """A log as a session writes it: JSON lines among tables and chatter."""
  lines = ['starting bench', '| model | batch |', '|---|---|', '{not json',
           '[1, 2]']
  for r in rows:
    lines += [json.dumps(r), 'W0000 some warning']
  return '\n'.join(lines) + '\n'


TORCH = [
    _torch('dcgan64', 128, 'fp32_eager', 10000.0),
    _torch('dcgan64', 128, 'bf16_cl_eager', 17000.0),
    _torch('dcgan64', 128, 'bf16_cl_compile', error='RuntimeError()'),
    _torch('inception_fid', 256, 'fp32_eager', 1000.0),
    _torch('inception_fid', 256, 'bf16_cl_eager', 2500.0),
    _torch('inception_fid', 256, 'bf16_cl_compile', 3000.0),
    {'case': 'opencv_degrade_cpu', 'workers': 16, 'images': 1024,
     'img_s': 10000.0},
]
MEDJAX = [
    # dcgan64/128: fp32 2.5x best (17,000, compile errored), bf16 repeated
    # three times: median 40,000 -> 2.35x.
    _train('dcgan', 64, 128, 'float32', 42500.0),
    _train('dcgan', 64, 128, 'bfloat16', 30000.0),
    _train('dcgan', 64, 128, 'bfloat16', 40000.0, device='NVIDIA H200'),
    _train('dcgan', 64, 128, 'bfloat16', 50000.0),
    # srgan at 96 -> srgan_x4_96; no reference row: goal unknown.
    _train('srgan', 96, 16, 'float32', 900.0, mfu=None),
    {'bench': 'metrics', 'case': 'inception_fid', 'batch': 256,
     'dtype': 'bfloat16', 'images_per_s': 3300.0, 'step_ms': 77.6,
     'compile_s': 20.0, 'device': H100},
    {'bench': 'degradations', 'spec': 'primary', 'batch': 256,
     'images_per_s': 150000.0, 'batch_ms': 1.7, 'compile_s': 0.5,
     'device': H100},
    {'bench': 'degradations', 'spec': 'x4_bicubic', 'batch': 256,
     'images_per_s': 50000.0, 'batch_ms': 5.1, 'compile_s': 0.5,
     'device': H100},
    {'bench': 'pipeline', 'measure': 'host', 'images_per_s': 20000.0},
    {'bench': 'pipeline', 'measure': 'step', 'source': 'real',
     'step_ms': 12.0},
    {'bench': 'pipeline', 'measure': 'end_to_end', 'model': 'dcgan',
     'dataset': 'mni_brain_phantom/train', 'image_size': 64, 'batch': 128,
     'dtype': 'float32', 'synthetic_step_ms': 10.0, 'real_step_ms': 10.5,
     'ratio': 1.05, 'device': H100},
    {'bench': 'pipeline', 'measure': 'end_to_end', 'model': 'srresnet',
     'dataset': 'mni_brain_phantom/train', 'image_size': 256, 'batch': 16,
     'dtype': 'float32', 'synthetic_step_ms': 10.0, 'real_step_ms': 12.0,
     'ratio': 1.2, 'device_prefetch': 2, 'real_unprefetched_ratio': 1.5,
     'device': H100},
    {'bench': 'max_batch', 'kind': 'probe', 'model': 'dcgan',
     'dtype': 'bfloat16', 'batch': 8192, 'needed_mb': 60000.0},
    {'bench': 'max_batch', 'kind': 'result', 'model': 'dcgan',
     'dtype': 'bfloat16', 'largest_batch': 8192, 'needed_mb': 60000.0,
     'limit_mb': 79000.0, 'run_ok': True, 'images_per_s': 70000.0,
     'device': H100},
    {'bench': 'max_batch', 'kind': 'result', 'model': 'srgan',
     'dtype': 'float32', 'largest_batch': 512, 'needed_mb': 70000.0,
     'limit_mb': 79000.0, 'run_ok': None},
    {'bench': 'max_batch', 'kind': 'result', 'model': 'broken'},
]


def _rows():
  return (report.parse_rows(_log(*TORCH[:3])) + report.parse_rows(
      _log(*TORCH[3:], *MEDJAX)))


def _by(rows, table, *key):
  return {tuple(r[k] for k in key): r for r in rows if r['table'] == table}


def test_parse_rows_keeps_only_json_objects():
  rows = report.parse_rows(_log({'a': 1}, {'b': 2}) + '{"c": 3\n  {"d": 4}\n')
  assert rows == [{'a': 1}, {'b': 2}, {'d': 4}]


def test_train_step_best_excludes_errors_and_ratios_use_the_median():
  steps = _by(report.compare_steps(_rows()), 'steps', 'workload', 'batch')
  dcgan = steps['dcgan64', 128]
  assert dcgan['pytorch_bf16_cl_compile'] == 'error'
  assert dcgan['pytorch_best'] == 17000.0
  assert dcgan['pytorch_best_mode'] == 'bf16_cl_eager'
  assert dcgan['medjax_bfloat16'] == 40000.0  # median of 30k, 40k, 50k
  assert dcgan['runs'] == {'medjax_bfloat16': 3}
  assert dcgan['ratio_float32'] == pytest.approx(2.5)
  assert dcgan['ratio_bfloat16'] == pytest.approx(40000 / 17000)
  assert dcgan['met'] is True and dcgan['missing'] == []
  assert dcgan['mfu_float32'] == 0.25 and dcgan['compile_s_bfloat16'] == 10


def test_train_step_goal_not_met_when_one_dtype_is_below_2x():
  rows = _rows() + [_train('dcgan', 64, 128, 'float32', 30000.0)] * 2
  dcgan = _by(report.compare_steps(rows), 'steps', 'workload',
              'batch')['dcgan64', 128]
  assert dcgan['medjax_float32'] == 30000.0  # median of 42.5k, 30k, 30k
  assert dcgan['ratio_float32'] < 2 and dcgan['met'] is False


def test_missing_figures_and_unknown_goals():
  steps = _by(report.compare_steps(_rows()), 'steps', 'workload', 'batch')
  srgan = steps['srgan_x4_96', 16]
  assert srgan['pytorch_best'] is None and srgan['ratio_float32'] is None
  assert srgan['medjax_bfloat16'] is None and srgan['mfu_float32'] is None
  assert srgan['goal'] == '-' and srgan['met'] is None
  inception = steps['inception_fid', 256]
  # Goal: the best medjax dtype at least the torch.compile figure (3,000).
  assert inception['met'] is True and inception['missing'] == ['float32']
  assert inception['ratio_bfloat16'] == pytest.approx(1.1)
  slower = [r for r in _rows() if r.get('bench') != 'metrics'] + [
      {'bench': 'metrics', 'case': 'inception_fid', 'batch': 256,
       'dtype': 'float32', 'images_per_s': 2900.0}]
  inception = _by(report.compare_steps(slower), 'steps', 'workload',
                  'batch')['inception_fid', 256]
  assert inception['met'] is False


def test_degradations_pipeline_and_largest_batch():
  rows = _rows()
  deg = _by(report.compare_degradations(rows), 'degradations', 'spec')
  assert deg['primary',]['ratio'] == pytest.approx(15.0)
  assert deg['primary',]['met'] is True and deg['x4_bicubic',]['met'] is False
  assert deg['primary',]['opencv_source'] == 'ref_degrade.py, 16 workers'
  no_cv = report.compare_degradations(
      [r for r in rows if r.get('case') != 'opencv_degrade_cpu'])
  assert no_cv[0]['opencv_img_s'] == 9100.0
  assert no_cv[0]['opencv_source'] == 'issue table (16 processes)'
  pipe = _by(report.compare_pipeline(rows), 'pipeline', 'batch')
  assert pipe[128,]['ratio'] == pytest.approx(1.05) and pipe[128,]['met']
  assert pipe[16,]['met'] is False and pipe[16,]['unprefetched_ratio'] == 1.5
  assert pipe[16,]['device_prefetch'] == 2
  assert pipe[128,]['unprefetched_ratio'] is None
  assert pipe[128,]['device_prefetch'] is None
  gemm = dict(rows[[r.get('model') for r in rows].index('srresnet')],
              conv_forms='gemm', real_step_ms=10.4, ratio=1.04)
  split = report.compare_pipeline(rows + [gemm])
  assert [p['config'].endswith('(conv forms gemm)') for p in split].count(
      True) == 1  # Its own row, beside the default's.
  assert len(split) == len(report.compare_pipeline(rows)) + 1
  big = _by(report.largest_batches(rows), 'max_batch', 'model')
  assert set(big) == {('dcgan',), ('srgan',)}  # 'broken' skipped
  assert big['dcgan',]['confirmed'] and big['dcgan',]['images_per_s'] == 7e4
  assert not big['srgan',]['confirmed']
  assert big['srgan',]['images_per_s'] is None


def test_markdown_formats_cells_and_footnotes():
  text = report.render(report.build_report(_rows(), 'abc1234', '2026-11-26'))
  assert text.startswith(f'Device: {H100}, NVIDIA H200; date 2026-11-26; '
                         'commit abc1234.')
  lines = text.splitlines()
  dcgan = next(l for l in lines if l.startswith('| dcgan64 | 128 |'))
  assert dcgan == (
      '| dcgan64 | 128 | 10,000 | 17,000 | error | 17,000 (bf16 CL) | 42,500 |'
      ' 40,000* | 2.50 | 2.35 | each dtype >= 2x best | yes | 25.0% / 25.0% |'
      ' 40.0% / 40.0% | 10.0 / 10.0 | 2,048 / 2,048 |')
  srgan = next(l for l in lines if l.startswith('| srgan_x4_96 |'))
  assert srgan.split(' | ')[2:6] == ['-', '-', '-', '-']
  assert '| yes (fp32 not measured) |' in next(
      l for l in lines if l.startswith('| inception_fid |'))
  assert '| primary | 256 | 150,000 | 10,000 | ref_degrade.py, 16 workers |' \
         ' 15.00 | >= 10x OpenCV | yes |' in text
  assert ('| dcgan 64px float32 (mni_brain_phantom/train) | 128 | - | 10.0 |'
          ' 10.5 | 1.05 | - | real <= 1.10x synthetic | yes |') in text
  assert '| 16 | 2 | 10.0 | 12.0 | 1.20 | 1.50 | real' in text
  assert '| dcgan | bfloat16 | 8192 | 60,000 | 79,000 | yes | 70,000 |' in text
  assert lines[-1] == ('\\* Median of repeated runs: dcgan64 128 '
                       'medjax_bfloat16: median of 3 runs.')
  assert '### Largest batch' in text


def test_cli_end_to_end(tmp_path, capsys):
  torch_log, medjax_log = tmp_path / 'torch.log', tmp_path / 'medjax.log'
  torch_log.write_text(_log(*TORCH))
  medjax_log.write_text(_log(*MEDJAX))
  rows = report.main([str(torch_log), str(medjax_log), '--commit', 'c0ffee',
                      '--date', '2026-11-26'])
  text = capsys.readouterr().out
  assert text == report.render(rows)
  for title in ('Train steps and Inception', 'Degradations on device',
                'Input pipeline', 'Largest batch'):
    assert f'### {title}' in text
  report.main([str(torch_log), str(medjax_log), '--json', '--commit', 'c0ffee'])
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert lines[0]['table'] == 'session' and lines[0]['commit'] == 'c0ffee'
  assert [r['table'] for r in lines[1:]] == (
      ['steps'] * 3 + ['degradations'] * 2 + ['pipeline'] * 2
      + ['max_batch'] * 2)
  assert lines[1:] == json.loads(json.dumps(rows[1:]))


def test_only_reference_logs_and_default_commit(tmp_path, capsys):
  log = tmp_path / 'torch.log'
  log.write_text(_log(*TORCH[:3]))
  report.main([str(log)])
  text = capsys.readouterr().out
  assert text.startswith('Device: unknown; date ')
  assert 'commit unknown' not in text  # this checkout has a git HEAD
  assert '| dcgan64 | 128 | 10,000 | 17,000 | error |' in text
  assert '### Degradations' not in text and '### Largest batch' not in text


def test_rows_of_bench_reference_count_as_the_reference():
  """bench/reference.py tags its rows 'bench': 'reference' (+ device, date);
  they are the PyTorch figures, and their CPU device is not medjax's."""
  rows = [dict(_torch('dcgan64', 128, 'fp32_eager', 20000.0),
               bench='reference', device='cpu'),
          _train('dcgan', 64, 128, 'float32', 50000.0)]
  session, step = report.build_report(rows, commit='c', date='d')[:2]
  assert session['devices'] == [H100]
  assert step['pytorch_best'] == 20000.0 and step['ratio_float32'] == 2.5


def test_conv_forms_and_packed_variants_are_rows_against_the_same_reference():
  rows = [_torch('dcgan64', 128, 'fp32_eager', 20000.0),
          _train('dcgan', 64, 128, 'float32', 50000.0, conv_forms='auto',
                 pack_state=False, batchnorm='flax', one_d_call=True),
          _train('dcgan', 64, 128, 'float32', 30000.0, conv_forms='on'),
          _train('dcgan', 64, 128, 'float32', 60000.0, pack_state=True),
          _train('dcgan', 64, 128, 'float32', 70000.0,
                 state_kernel_layout='ohwi'),
          _train('dcgan', 64, 128, 'float32', 40000.0, batchnorm='fused'),
          _train('dcgan', 64, 128, 'float32', 44000.0, one_d_call=False),
          _train('dcgan', 64, 128, 'float32', 80000.0, conv_forms='gemm',
                 conv_gemm_mb=32.0),
          _train('dcgan', 64, 128, 'float32', 90000.0, conv_forms='gemm',
                 conv_gemm_mb=128.0)]
  steps = [r for r in report.build_report(rows, commit='c', date='d')
           if r['table'] == 'steps']
  assert [(r['workload'], r['ratio_float32']) for r in steps] == [
      ('dcgan64', 2.5), ('dcgan64 (BatchNorm fused)', 2.0),
      ('dcgan64 (conv forms gemm <= 128 MB)', 4.5),
      ('dcgan64 (conv forms gemm <= 32 MB)', 4.0),
      ('dcgan64 (conv forms on)', 1.5),
      ('dcgan64 (kernels OHWI)', 3.5), ('dcgan64 (state packed)', 3.0),
      ('dcgan64 (two D calls)', 2.2)]
  assert report._workload({'bench': 'metrics', 'case': 'inception_fid',
                           'fold_bn': True}) == 'inception_fid (BN folded)'
  assert report._workload({'bench': 'metrics', 'case': 'inception_fid',
                           'fold_bn': False}) == 'inception_fid'

  assert not steps[0]['runs']  # Not merged into a median.


def test_xla_flags_variant_is_its_own_row_against_the_same_reference():
  rows = [_torch('dcgan64', 128, 'fp32_eager', 20000.0),
          _train('dcgan', 64, 128, 'float32', 50000.0, xla_flags=''),
          _train('dcgan', 64, 128, 'float32', 40000.0,
                 xla_flags='--xla_gpu_autotune_level=0')]
  steps = [r for r in report.build_report(rows, commit='c', date='d')
           if r['table'] == 'steps']
  assert [(r['workload'], r['ratio_float32']) for r in steps] == [
      ('dcgan64', 2.5),
      ('dcgan64 (XLA_FLAGS --xla_gpu_autotune_level=0)', 2.0)]


def test_fixed_cost_is_the_line_through_the_smallest_and_largest_batch():
  """t = fixed + per_image * batch through the medians at the two ends;
  workloads timed at one batch get no row."""
  rows = [_train('srgan', 96, 16, 'float32', 1e3 * 16 / 10.0,
                 host_loop_ms=9.5),
          _train('srgan', 96, 16, 'float32', 1e3 * 16 / 12.0,
                 host_loop_ms=10.5),
          _train('srgan', 96, 32, 'float32', 1e3 * 32 / 15.0),
          _train('srgan', 96, 64, 'float32', 1e3 * 64 / 23.0),
          _train('dcgan', 64, 128, 'float32', 20000.0)]
  fixed = [r for r in report.build_report(rows, commit='c', date='d')
           if r['table'] == 'fixed_cost']
  assert len(fixed) == 1
  r = fixed[0]
  assert r['batches'] == (16, 64)
  np.testing.assert_allclose(r['step_ms'], (11.0, 23.0))
  np.testing.assert_allclose(
      (r['per_image_ms'], r['fixed_ms'], r['fixed_share'], r['host_loop_ms']),
      (0.25, 7.0, 7.0 / 11.0, 10.0))
  text = report.render(report.build_report(rows, commit='c', date='d'))
  assert '| srgan_x4_96 | float32 | 16 / 64 | 11.0 / 23.0 | 7.00 | 0.250 | 63.6% | 10.0 |' in text


def test_kernel_cost_is_the_time_beyond_the_roofline_per_kernel():
  """(median step - roofline) / kernels, per workload, batch and dtype; a
  graph run is its own workload; rows without a roofline (CPU) get none."""
  graphs = '--xla_gpu_enable_command_buffer=+CONVOLUTION'
  rows = [_train('srgan', 96, 16, 'float32', 1e3 * 16 / 11.0,
                 roofline_ms=3.0, kernels=1000, xla_flags=''),
          _train('srgan', 96, 16, 'float32', 1e3 * 16 / 13.0,
                 roofline_ms=3.0, kernels=1000, xla_flags=''),
          _train('srgan', 96, 16, 'float32', 1e3 * 16 / 6.0,
                 roofline_ms=3.0, kernels=1000, xla_flags=graphs),
          _train('dcgan', 64, 128, 'float32', 20000.0)]
  built = report.build_report(rows, commit='c', date='d')
  costs = [r for r in built if r['table'] == 'kernel_cost']
  assert [(r['workload'], r['step_ms'], r['kernels']) for r in costs] == [
      ('srgan_x4_96', pytest.approx(12.0), 1000),
      (f'srgan_x4_96 (XLA_FLAGS {graphs})', pytest.approx(6.0), 1000)]
  np.testing.assert_allclose([r['excess_us_per_kernel'] for r in costs],
                             [9.0, 3.0])
  assert '| srgan_x4_96 | 16 | float32 | 12.0 | 3.00 | 1000 | 9.0 |' in (
      report.render(built))
