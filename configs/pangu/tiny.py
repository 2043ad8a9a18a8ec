"""Tiny Pangu MoE: 4 layers (1 dense + 3 MoE), d=128, 8 routed experts top-2 + 1 shared, MTP depth 1.

Trains on a 2-core CPU in minutes on the embedded corpus with the byte tokenizer.
"""

from pangu_jax.config import base_config


def get_config():
  return base_config()
