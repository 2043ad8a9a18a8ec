"""Weight initialisation: TinyInit (Pangu Ultra section 2.2) and a standard baseline.

TinyInit draws every weight matrix from N(0, sqrt(1 / (2 d L))) (width d, depth L)
and the embedding from N(0, 0.5). The baseline ("standard") draws everything,
embedding included, from N(0, init_std) with init_std = 0.02 by default: the
GPT-2/Megatron default, which is what most pre-norm models start from.

Norm gammas are not drawn: pre-norms start at 1; with the depth-scaled sandwich
norm the post-norm gammas start at c / sqrt(L) (see `transformer.init_block`).

Every init function returns its parameters as `Logical` (array, logical axis names)
pairs, declared next to the array they name; `transformer.init_params` keeps the
arrays, `transformer.param_axes` the names (from which the mesh's shardings follow).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

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


# ----------------------------------------------------------------------------- logical axes of the parameters


@dataclasses.dataclass(frozen=True)
class Logical:
  """A parameter with the logical name of each of its dims (e.g. ("embed", "vocab")).

  The init functions return trees of these; `unbox` gives the arrays, `logical_axes` the names. The names are
  our definitions (listed with their mesh axes in `pangu_jax.parallel.mesh.RULES`), declared where each weight is
  created, so that a parameter's sharding never depends on its key."""

  value: Any
  axes: tuple[str, ...]


jax.tree_util.register_dataclass(Logical, data_fields=["value"], meta_fields=["axes"])


def _is_logical(x) -> bool:
  return isinstance(x, Logical)


def logical(value, *axes: str) -> Logical:
  """`value` with one logical axis name per dim."""
  if len(axes) != value.ndim:
    raise ValueError(f"logical axes {axes} do not match the shape {value.shape} (one name per dim)")
  return Logical(value, tuple(axes))


def stacked(tree, axis: str):
  """A tree of `Logical` stacked on a new leading dim (e.g. by `jax.vmap`) named `axis`."""
  return jax.tree.map(lambda p: Logical(p.value, (axis,) + p.axes), tree, is_leaf=_is_logical)


def unbox(tree):
  """The arrays of a tree of `Logical`."""
  return jax.tree.map(lambda p: p.value, tree, is_leaf=_is_logical)


def logical_axes(tree):
  """The axis names of a tree of `Logical`: the same dict tree with a tuple of names in place of each array."""
  return jax.tree.map(lambda p: p.axes, tree, is_leaf=_is_logical)
