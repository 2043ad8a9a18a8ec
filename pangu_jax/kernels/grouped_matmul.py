"""Grouped matmul: rows sorted by group, each group multiplied by its own weight.

`grouped_matmul(x, w, group_sizes)` computes, for rows r of group g,
out[r] = x[r] @ w[g], with x (M, K) sorted by group, w (G, K, N) and
group_sizes (G,) summing to at most M (rows past the sum give zeros).

The portable form is `jax.lax.ragged_dot`, which XLA lowers to a grouped kernel on
accelerators. On CPU, XLA expands it into a zero-padded dense dot (about G times
the useful FLOPs); the CPU-fast form is the next step (see docs/pangu_jax.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def grouped_matmul(x: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
  with jax.named_scope("grouped_matmul"):
    return jax.lax.ragged_dot(x, w.astype(x.dtype), group_sizes.astype(jnp.int32))
