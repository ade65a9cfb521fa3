"""The train step and the loop end to end: resume, kill, devices, sampling."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import sample
from medjax import train
from medjax.trainers import gan
from tests.conftest import REPO, tiny_config, tiny_flags


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def _assert_bitwise_equal(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_train_step_updates_everything_and_losses_are_finite(tmp_path, dtype):
  config = tiny_config(str(tmp_path), **{'model.dtype': dtype})
  task = gan.GANTask(config)
  state = task.init(jax.random.key(0))
  batch = {'image': jax.random.randint(jax.random.key(1), (8, 16, 16, 1), 0,
                                       256).astype(jnp.uint8)}
  new, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(2))
  values = metrics.compute()
  assert set(values) == {'d_loss', 'g_loss', 'd_real', 'd_fake'}
  assert all(np.isfinite(float(v)) for v in values.values())
  assert int(new.step) == 1
  for name in ('g_params', 'd_params', 'g_stats', 'd_stats'):
    for old, upd in zip(jax.tree.leaves(getattr(state, name)),
                        jax.tree.leaves(getattr(new, name))):
      assert not np.array_equal(old, upd), name


def test_resume_equals_uninterrupted_run(data_dir, tmp_path, caplog,
                                        monkeypatch):
  made = []

  def recording(*args, **kwargs):
    made.append(make(*args, **kwargs))
    return made[-1]
  make = train.make_train_step
  monkeypatch.setattr(train, 'make_train_step', recording)
  straight = train.train_and_evaluate(
      tiny_config(data_dir, num_train_steps=6, checkpoint_every_steps=3),
      str(tmp_path / 'a'))
  # Six steps with logging, samples, validation and checkpoints in between
  # compiled the step and the metric merge once each: no recompiles.
  (step_fn, merge), = made
  assert step_fn.func._cache_size() == 1 and merge._cache_size() == 1
  wd = str(tmp_path / 'b')
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=3,
                                       checkpoint_every_steps=3), wd)
  caplog.set_level('INFO')
  resumed = train.train_and_evaluate(
      tiny_config(data_dir, num_train_steps=6, checkpoint_every_steps=3), wd)
  assert 'Resumed from the checkpoint at step 3' in caplog.text
  assert int(resumed.step) == 6
  _assert_bitwise_equal(straight, resumed)
  # What a user opens: sample grids, TensorBoard events, checkpoints.
  assert sorted(os.listdir(os.path.join(wd, 'samples'))) == [
      'step_0000002.png', 'step_0000003.png', 'step_0000004.png',
      'step_0000006.png']
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(wd))
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['3', '6']


def test_no_host_round_trips_between_log_steps(data_dir, tmp_path,
                                               monkeypatch):
  # The performance issue: no `.item()`/`float()`/`np.asarray` of device
  # values in the loop except at steps that log, sample, validate or
  # checkpoint. Count such reads around each step: none may happen from the
  # entry of a step that acts on nothing until the entry of the next one (its
  # metric merge, the loop's checks, the next batch and its device put
  # included). Reads go through `jax.Array._value` (float, int, bool, tolist,
  # device_get) or, for CPU arrays, numpy's buffer protocol, which only the
  # wrapped `np.asarray`/`np.array`/`.item()` below see. (GPUs have
  # `jax.transfer_guard`, which does nothing on the CPU.)
  from jax._src import array as array_lib
  reads = [0]
  impl = array_lib.ArrayImpl

  def counted(fn, device_only=False):
    def wrapper(x, *args, **kwargs):
      if not device_only or isinstance(x, jax.Array):
        reads[0] += 1
      return fn(x, *args, **kwargs)
    return wrapper
  monkeypatch.setattr(impl, '_value', property(counted(impl._value.fget)))
  monkeypatch.setattr(impl, 'item', counted(impl.item))
  monkeypatch.setattr(np, 'asarray', counted(np.asarray, device_only=True))
  monkeypatch.setattr(np, 'array', counted(np.array, device_only=True))
  marks = []  # (step, reads at its entry, reads at its return)

  def recording(*args, **kwargs):
    step_fn, merge = make(*args, **kwargs)

    def traced_step(state, batch, step, consts):
      before = reads[0]
      out = step_fn(state, batch, step, consts)
      marks.append((step, before, reads[0]))
      return out
    return traced_step, merge
  make = train.make_train_step
  monkeypatch.setattr(train, 'make_train_step', recording)
  every = 3  # steps 3 and 6 log, sample, validate and checkpoint
  train.train_and_evaluate(tiny_config(
      data_dir, num_train_steps=6, log_every_steps=every,
      sample_every_steps=every, checkpoint_every_steps=every,
      eval_every_steps=every, **{'gan.eval_split': 'test',
                                 'gan.eval_num_samples': 8}),
      str(tmp_path / 'run'))
  assert [m[0] for m in marks] == [1, 2, 3, 4, 5, 6]
  assert marks[2][2] < marks[3][1]  # the count sees step 3's logging
  for (step, before, after), (_, next_before, _) in zip(marks, marks[1:]):
    assert after == before, f'host read while dispatching step {step}'
    if step % every:
      assert next_before == after, (
          f'{next_before - after} host read(s) of device values after '
          f'step {step}, which logs nothing')


def test_workdir_of_another_experiment_is_refused(data_dir, tmp_path):
  wd = str(tmp_path)
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=2), wd)
  before = sorted(os.listdir(wd))
  saved = open(os.path.join(wd, 'config.json')).read()
  with pytest.raises(ValueError, match='another experiment.*model.latent_dim'):
    train.train_and_evaluate(
        tiny_config(data_dir, num_train_steps=4, **{'model.latent_dim': 8}),
        wd)
  assert sorted(os.listdir(wd)) == before
  assert open(os.path.join(wd, 'config.json')).read() == saved


def test_sigkill_then_rerun_equals_uninterrupted_run(data_dir, tmp_path):
  steps = 150
  wd = str(tmp_path / 'killed')
  cmd = [sys.executable, '-m', 'medjax.main',
         '--config=configs/dcgan_brain.py', f'--workdir={wd}',
         *tiny_flags(data_dir, num_train_steps=steps,
                     checkpoint_every_steps=5, log_every_steps=50,
                     sample_every_steps=1000)]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  ckpt_dir = os.path.join(wd, 'checkpoints')
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(d.isdigit() and int(d) >= 10
                                       for d in os.listdir(ckpt_dir)):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'run ended before it was killed'
  rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=True)
  assert 'Resumed from the checkpoint at step' in rerun.stderr
  straight = train.train_and_evaluate(
      tiny_config(data_dir, num_train_steps=steps, checkpoint_every_steps=50,
                  log_every_steps=50, sample_every_steps=1000),
      str(tmp_path / 'straight'))
  _assert_bitwise_equal(straight, train.restore_run(wd)[2])


def test_eight_devices_match_one(data_dir, tmp_path):
  script = textwrap.dedent(f"""
      import jax, numpy as np, pytest
      from medjax import train
      from tests.conftest import tiny_config
      assert jax.device_count() == 8
      with pytest.raises(ValueError, match='divisible by the 8 devices'):
        train.train_and_evaluate(
            tiny_config({data_dir!r}, batch_size=12), {str(tmp_path / 'bad')!r})
      # Packed over 8 devices (config.pack_state) against unpacked on one.
      state = train.train_and_evaluate(
          tiny_config({data_dir!r}, pack_state=True),
          {str(tmp_path / 'eight')!r})
      np.savez({str(tmp_path / 'eight.npz')!r},
               *[np.asarray(x) for x in jax.tree.leaves(state)])
      """)
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env,
                 check=True, timeout=300)
  one = train.train_and_evaluate(tiny_config(data_dir), str(tmp_path / 'one'))
  eight = np.load(tmp_path / 'eight.npz')
  leaves = _leaves(one)
  assert len(eight.files) == len(leaves)
  for i, x in enumerate(leaves):
    np.testing.assert_allclose(eight[f'arr_{i}'], x, rtol=1e-4, atol=1e-5)


def test_sample_is_deterministic_and_writes_pngs(data_dir, tmp_path):
  wd = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=2), wd)
  a, manifest = sample.generate(wd, num=5, seed=7, batch_size=2)
  b, _ = sample.generate(wd, num=5, seed=7, batch_size=5)
  c, _ = sample.generate(wd, num=5, seed=8)
  assert a.shape == (5, 16, 16, 1) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  out = str(tmp_path / 'out')
  sample.write(a, manifest, out)
  written = json.load(open(os.path.join(out, 'manifest.json')))
  assert written['synthetic'] and written['step'] == 2 and written['seed'] == 7
  assert written['files'] == [f'img_{i:05d}.png' for i in range(5)]
  assert all(os.path.exists(os.path.join(out, f)) for f in written['files'])


def test_failed_setup_leaves_workdir_free(data_dir, tmp_path):
  wd = str(tmp_path / 'run')
  with pytest.raises(ValueError, match='no_such_dataset'):
    train.train_and_evaluate(
        tiny_config(data_dir, **{'dataset.name': 'no_such_dataset'}), wd)
  assert not os.path.exists(os.path.join(wd, 'config.json'))
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=1), wd)


def test_sample_command_writes_pngs(data_dir, tmp_path):
  wd = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(data_dir, num_train_steps=1), wd)
  out = tmp_path / 'out'
  subprocess.run([sys.executable, '-m', 'medjax.sample', f'--workdir={wd}',
                  '--num=3', f'--out={out}', '--seed=1'], cwd=REPO,
                 check=True, timeout=300, capture_output=True)
  assert sorted(os.listdir(out)) == ['img_00000.png', 'img_00001.png',
                                     'img_00002.png', 'manifest.json']
