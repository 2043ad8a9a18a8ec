"""Weight initialisation: TinyInit (Pangu Ultra section 2.2) and a standard baseline.

TinyInit draws every weight matrix from N(0, sqrt(1 / (2 d L))) (width d, depth L)
and the embedding from N(0, 0.5). The baseline ("standard") draws everything,
embedding included, from N(0, init_std) with init_std = 0.02 by default: the
GPT-2/Megatron default, which is what most pre-norm models start from.

Norm gammas are not drawn: pre-norms start at 1; with the depth-scaled sandwich
norm the post-norm gammas start at c / sqrt(L) (see `transformer.init_block`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def weight_std(cfg) -> float:
  """Std of every weight matrix except the embedding."""
  if cfg.tiny_init:
    return math.sqrt(1.0 / (2.0 * cfg.hidden_size * cfg.num_layers))
  return cfg.init_std


def embed_std(cfg) -> float:
  return 0.5 if cfg.tiny_init else cfg.init_std


def normal(key: jax.Array, shape: tuple[int, ...], std: float, dtype) -> jax.Array:
  return (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype)
