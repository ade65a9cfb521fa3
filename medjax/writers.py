"""Metric writers and the progress line.

`create_default_writer` returns clu's TensorBoard writer when TensorFlow is
installed. Without TensorFlow (the default install, GPU hosts without TF) clu's
writers cannot be imported, so medjax writes the same TensorBoard event files
through the `tensorboard` package, which needs no TensorFlow. Both follow clu's
`MetricWriter` interface: `write_scalars`, `write_images`, `write_texts`,
`write_hparams`, `flush`, `close`.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any, Mapping

from absl import logging
import numpy as np

from medjax.images import encode_png


def tensorflow_available() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def create_default_writer(logdir: str, *, just_logging: bool = False):
  """A TensorBoard writer, or one that writes nothing if `just_logging`.

  Args:
    logdir: the TensorBoard log directory.
    just_logging: True on processes other than 0 in multi-host runs.

  Returns:
    An object with clu's `MetricWriter` methods.
  """
  if tensorflow_available():
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    return metric_writers.create_default_writer(
        logdir, just_logging=just_logging)
  if just_logging:
    return NullWriter()  # The progress line already logs the scalars.
  return EventFileWriter(logdir)


class NullWriter:
  """Writes nothing (processes other than 0)."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def write_images(self, step, images):
    del step, images

  def write_texts(self, step, texts):
    del step, texts

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    pass

  def close(self):
    pass


class EventFileWriter:
  """Writes scalars, images, texts and hparams as TensorBoard event files."""

  def __init__(self, logdir: str):
    # Imported here so that importing medjax stays light.
    from tensorboard.summary.writer import event_file_writer  # pylint: disable=g-import-not-at-top
    self._writer = event_file_writer.EventFileWriter(str(logdir))

  def _add(self, step: int, summary) -> None:
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self._writer.add_event(
        event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
              for k, v in scalars.items()]
    self._add(step, summary_pb2.Summary(value=values))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]):
    """Writes images, each (H, W, C) or (N, H, W, C) uint8 or float in [0, 1]."""
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    values = []
    for tag, image in images.items():
      batch = np.asarray(image)
      if batch.ndim == 3:
        batch = batch[None]
      for i, img in enumerate(batch):
        png = encode_png(img)
        values.append(summary_pb2.Summary.Value(
            tag=tag if len(batch) == 1 else f'{tag}/{i}',
            image=summary_pb2.Summary.Image(
                height=img.shape[0], width=img.shape[1],
                colorspace=img.shape[2], encoded_image_string=png)))
    self._add(step, summary_pb2.Summary(value=values))

  def write_texts(self, step: int, texts: Mapping[str, str]):
    from tensorboard.plugins.text import summary_v2  # pylint: disable=g-import-not-at-top
    for tag, text in texts.items():
      self._add(step, summary_v2.text_pb(tag, text))

  def write_hparams(self, hparams: Mapping[str, Any]):
    from tensorboard.plugins.hparams import summary_v2  # pylint: disable=g-import-not-at-top
    clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
             for k, v in hparams.items()}
    self._add(0, summary_v2.hparams_pb(clean))

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class ReportProgress:
  """The progress line: step, steps/s, ETA and the latest losses.

  clu's `periodic_actions.ReportProgress` needs TensorFlow and prints no losses,
  so medjax keeps this small equivalent. Rates exclude the first step after a
  (re)start, which includes compilation.
  """

  def __init__(self, num_train_steps: int, writer=None):
    self._total = num_train_steps
    self._writer = writer
    self._t0 = None
    self._s0 = None

  def start(self, step: int) -> None:
    """Marks the first timed step (call after the compile step)."""
    self._t0, self._s0 = time.perf_counter(), step

  def __call__(self, step: int, scalars: Mapping[str, float]) -> str:
    rate = 0.0
    if self._t0 is not None and step > self._s0:
      rate = (step - self._s0) / (time.perf_counter() - self._t0)
    eta = (self._total - step) / rate if rate > 0 else float('nan')
    parts = [f'step {step}/{self._total}',
             f'{rate:.2f} steps/s' if rate else 'warming up',
             f'ETA {format_seconds(eta)}']
    parts += [f'{k} {v:.4f}' for k, v in sorted(scalars.items())]
    line = ' | '.join(parts)
    logging.info('%s', line)
    if self._writer is not None and rate:
      self._writer.write_scalars(step, {'steps_per_sec': rate})
    return line


def format_seconds(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'
