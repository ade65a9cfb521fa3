"""medjax: degrade, restore, grow and measure medical image datasets in JAX.

Importing medjax picks XLA:CPU's convolution library before JAX starts its
backend (`cpu_convolutions`): on x86-64 CPU-only machines with jaxlib 0.10.2
or newer it appends `EIGEN_CONVOLUTIONS` to XLA_FLAGS, so float32
convolutions run on Eigen instead of YNNPACK. On a 2-core AMD EPYC
(docs/benchmarks.md, 2026-12-07) that cut the DCGAN train step at batch 128
by 28-30% and SRGAN's at 16 by 15-17%, and made InceptionV3's FID features
1.4x faster. A user's own
`--xla_cpu_experimental_ynn_fusion_type` in XLA_FLAGS is left as it is
(`...=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION`
keeps YNNPACK's convolutions).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
# YNNPACK keeps the matrix products (no change measured either way).
EIGEN_CONVOLUTIONS = f'{YNN_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'
# The oldest jaxlib known to take the flag; an XLA that does not know a flag
# in XLA_FLAGS aborts the process.
_MIN_JAXLIB = (0, 10, 2)


def _version(text: str) -> tuple[int, ...]:
  parts = []
  for part in text.split('.')[:3]:
    digits = ''.join(c for c in part if c.isdigit())
    parts.append(int(digits or 0))
  return tuple(parts)


def _accelerator_plugin() -> bool:
  """Whether a GPU or TPU PJRT plugin is installed, found the ways JAX finds
  them: libtpu, the `jax_plugins` entry points, the `jax_plugins` package."""
  if importlib.util.find_spec('libtpu') is not None:
    return True
  if importlib.metadata.entry_points(group='jax_plugins'):
    return True
  try:
    import jax_plugins  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  import pkgutil  # pylint: disable=g-import-not-at-top
  return any(True for _ in pkgutil.iter_modules(jax_plugins.__path__))


def _backend_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return False


def cpu_convolutions(environ=os.environ, machine: str | None = None,
                     jaxlib_version: str | None = None,
                     accelerator: bool | None = None,
                     started: bool | None = None) -> str:
  """Chooses XLA:CPU's library for float32 convolutions; says which it is.

  Appends `EIGEN_CONVOLUTIONS` to environ['XLA_FLAGS'] unless XLA_FLAGS
  already names `YNN_FLAG`, the machine is not x86-64 (not measured
  elsewhere), jaxlib is older than 0.10.2 or missing, or a GPU/TPU plugin is
  installed (its programs do not use XLA:CPU; the flag would only label
  every benchmark row), or JAX's backend has already started (XLA reads its
  flags once, then).

  Args:
    environ: the environment to read and update.
    machine, jaxlib_version, accelerator, started: for tests; default this
      machine's and process's.

  Returns:
    'eigen' or 'ynn': what XLA_FLAGS now gives XLA:CPU's convolutions
    (`medjax.models.conv` picks its forms by it).
  """
  flags = environ.get('XLA_FLAGS', '')
  mine = [f for f in flags.split() if f.startswith(YNN_FLAG + '=')]
  if mine:
    return 'ynn' if 'INDIVIDUAL_CONVOLUTION' in mine[-1] else 'eigen'
  if started is None:
    started = _backend_started()
  if started:  # Too late: XLA read its flags when the backend started.
    return 'ynn'
  machine = platform.machine() if machine is None else machine
  if jaxlib_version is None:
    try:
      jaxlib_version = importlib.metadata.version('jaxlib')
    except importlib.metadata.PackageNotFoundError:
      return 'ynn'
  if accelerator is None:
    accelerator = _accelerator_plugin()
  if (machine.lower() not in ('x86_64', 'amd64') or accelerator
      or _version(jaxlib_version) < _MIN_JAXLIB):
    return 'ynn'
  environ['XLA_FLAGS'] = f'{flags} {EIGEN_CONVOLUTIONS}'.strip()
  return 'eigen'


CPU_CONVOLUTIONS = cpu_convolutions()
