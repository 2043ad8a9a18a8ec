"""Grouped matmul: blocked (CPU) and ragged implementations against a per-group loop, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pangu_jax.kernels.grouped_matmul import grouped_matmul


def _loop(x, w, sizes):
  out, start = [], 0
  for g, n in enumerate(np.asarray(sizes)):
    out.append(np.asarray(x[start : start + n], np.float64) @ np.asarray(w[g], np.float64))
    start += n
  return np.concatenate(out)


@pytest.mark.parametrize("sizes", [[5, 0, 11, 16], [0, 0, 32, 0], [1, 1, 1, 29], [8, 8, 8, 8]])
@pytest.mark.parametrize("block", [4, 8, 64])
def test_blocked_matches_loop_and_ragged(sizes, block):
  x = jax.random.normal(jax.random.key(0), (32, 6))
  w = jax.random.normal(jax.random.key(1), (4, 6, 5))
  sizes = jnp.array(sizes)
  want = _loop(x, w, sizes)
  for impl in ("blocked", "scanned", "ragged"):
    got = jax.jit(lambda x, w, s, impl=impl: grouped_matmul(x, w, s, impl=impl, block=block))(x, w, sizes)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize("sizes", [[5, 0, 11, 16], [0, 0, 32, 0]])
def test_blocked_gradients_match_ragged(sizes):
  x = jax.random.normal(jax.random.key(2), (32, 6))
  w = jax.random.normal(jax.random.key(3), (4, 6, 5))
  ct = jax.random.normal(jax.random.key(4), (32, 5))
  sizes = jnp.array(sizes)

  def loss(x, w, impl):
    return jnp.sum(grouped_matmul(x, w, sizes, impl=impl, block=8) * ct)

  gb = jax.jit(jax.grad(lambda x, w: loss(x, w, "blocked"), argnums=(0, 1)))(x, w)
  gr = jax.jit(jax.grad(lambda x, w: loss(x, w, "ragged"), argnums=(0, 1)))(x, w)
  gs = jax.jit(jax.grad(lambda x, w: loss(x, w, "scanned"), argnums=(0, 1)))(x, w)
  for a, b, c in zip(gb, gr, gs):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-5)
  # closed form for dW of the group with 11 rows (rows 5..15 in sorted order) when sizes[0] == 5
  if sizes[0] == 5:
    np.testing.assert_allclose(gb[1][2], x[5:16].T @ ct[5:16], rtol=1e-5, atol=1e-5)


def test_permutation_vjps_match_autodiff_of_the_plain_gathers():
  from pangu_jax.kernels import permute

  t, k, d = 6, 3, 4
  x = jax.random.normal(jax.random.key(5), (t, d))
  idx = jax.random.randint(jax.random.key(6), (t, k), 0, 5)
  order = jnp.argsort(idx.reshape(-1), stable=True).astype(jnp.int32)
  inv = permute.inverse_permutation(order)
  np.testing.assert_array_equal(order[inv], np.arange(t * k))
  ct = jax.random.normal(jax.random.key(7), (t * k, d))

  def custom(x):
    xs = permute.expand_sorted(x, order, inv)
    return jnp.sum(permute.unsort(jnp.sin(xs), order, inv) * ct)

  def plain(x):
    xs = jnp.take(x, order // k, axis=0)
    return jnp.sum(jnp.zeros_like(xs).at[order].set(jnp.sin(xs)) * ct)

  np.testing.assert_allclose(custom(x), plain(x), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(custom)(x), jax.grad(plain)(x), rtol=1e-5, atol=1e-6)
