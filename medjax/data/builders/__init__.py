"""TFDS builders of the datasets medjax embeds (importing registers them)."""

from medjax.data.builders.mni_brain_phantom import config_for
from medjax.data.builders.mni_brain_phantom import MniBrainPhantom
from medjax.data.builders.mni_brain_phantom import prepare

__all__ = ['MniBrainPhantom', 'config_for', 'prepare']
