"""Token permutation for the dropless MoE with gather-only backward passes (custom VJPs).

Autodiff of `x[order // k]` gives a scatter-add into x, and of `zeros.at[order].set(ys)` a scatter on the
forward; XLA's CPU scatters run row by row. Both directions here are gathers: the permutation's inverse is
computed once (an integer scatter of T*k indices) and reused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def inverse_permutation(order: jax.Array) -> jax.Array:
  return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))


@jax.custom_vjp
def expand_sorted(x: jax.Array, order: jax.Array, inv: jax.Array) -> jax.Array:
  """Rows x[order // k] (k = len(order) // len(x)): each token once per chosen expert, sorted by expert."""
  return jnp.take(x, order // (order.shape[0] // x.shape[0]), axis=0)


def _expand_fwd(x, order, inv):
  return expand_sorted(x, order, inv), (inv, x.shape[0])


def _expand_bwd(res, d_xs):
  inv, t = res
  k = d_xs.shape[0] // t
  dx = jnp.take(d_xs, inv, axis=0).reshape(t, k, -1).sum(1)  # assignment t*k + j sits at sorted position inv[.]
  return dx, None, None


expand_sorted.defvjp(_expand_fwd, _expand_bwd)


@jax.custom_vjp
def unsort(ys: jax.Array, order: jax.Array, inv: jax.Array) -> jax.Array:
  """ys in expert-sorted order -> assignment order (row s = t*k + j): ys[inv]."""
  return jnp.take(ys, inv, axis=0)


def _unsort_fwd(ys, order, inv):
  return unsort(ys, order, inv), order


def _unsort_bwd(order, dy):
  return jnp.take(dy, order, axis=0), None, None


unsort.defvjp(_unsort_fwd, _unsort_bwd)
