"""Grouped matmul: rows sorted by group, each group multiplied by its own weight.

`grouped_matmul(x, w, group_sizes)` computes, for rows r of group g,
out[r] = x[r] @ w[g], with x (M, K) sorted by group, w (G, K, N) and
group_sizes (G,) summing to M.

Three implementations (`impl="auto"`: ragged off CPU; on CPU scanned for large expert weights, else blocked):

* `ragged`: `jax.lax.ragged_dot`. XLA lowers it to a grouped kernel on GPU/TPU;
  on CPU it expands into a zero-padded dense dot (about G times the useful FLOPs).
* `blocked` (the CPU path): each group's rows are padded to a multiple of a block
  of `block` rows, giving at most ceil(M / block) + G blocks, each belonging to one
  group; one batched matmul over the blocks then does the work, with only the
  padding wasted. A custom VJP keeps the backward in the same form: the gradient
  w.r.t. x is a blocked matmul with the transposed weights, gathered back by the
  inverse index (no scatter-add), and the gradient w.r.t. w is a per-block
  x^T dy reduced over each group's (contiguous) blocks by a sorted segment sum.

* `scanned` (the CPU path for large experts): the same block layout, but a
  `lax.scan` over blocks multiplies each block by its group's weight in place
  (one dynamic slice at a time instead of a gathered (blocks, K, N) copy), skips
  padding-only blocks with `lax.cond`, and its custom VJP accumulates dW per
  group inside the scan (no per-block dW tensor).

All compute the same function; tests check them against each other and against
a per-group loop, values and gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _layout(group_sizes: jax.Array, m: int, block: int):
  """Static-shape block layout for sorted rows.

  Returns (src, dst, block_group):
    src (P,)  for each padded row, the source row in x, or m (a zero row) for padding;
    dst (M,)  for each source row, its padded position;
    block_group (nb,) the group of each block (padding blocks past the end get group G-1, all-zero rows).
  P = nb * block with nb = ceil(m / block) + G.
  """
  g = group_sizes.shape[0]
  nb = -(-m // block) + g
  sizes = group_sizes.astype(jnp.int32)
  padded = ((sizes + block - 1) // block) * block
  starts = jnp.cumsum(sizes) - sizes  # first row of each group in x
  pstarts = jnp.cumsum(padded) - padded  # first padded row of each group
  rows = jnp.arange(m, dtype=jnp.int32)
  row_group = jnp.searchsorted(jnp.cumsum(sizes), rows, side="right").astype(jnp.int32)
  row_group = jnp.minimum(row_group, g - 1)
  dst = pstarts[row_group] + rows - starts[row_group]
  src = jnp.full((nb * block,), m, jnp.int32).at[dst].set(rows, mode="drop")
  block_start = jnp.arange(nb, dtype=jnp.int32) * block
  block_group = jnp.minimum(jnp.searchsorted(jnp.cumsum(padded), block_start, side="right"), g - 1).astype(jnp.int32)
  return src, dst, block_group


def _pad_rows(x: jax.Array, src: jax.Array, nb: int, block: int) -> jax.Array:
  xz = jnp.concatenate([x, jnp.zeros((1, x.shape[1]), x.dtype)], axis=0)
  return jnp.take(xz, src, axis=0).reshape(nb, block, x.shape[1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _blocked(x, w, group_sizes, block):
  out, _ = _blocked_fwd(x, w, group_sizes, block)
  return out


def _blocked_fwd(x, w, group_sizes, block):
  m = x.shape[0]
  src, dst, bg = _layout(group_sizes, m, block)
  nb = bg.shape[0]
  xb = _pad_rows(x, src, nb, block)
  yb = jnp.einsum("nbk,nkf->nbf", xb, jnp.take(w, bg, axis=0))
  out = jnp.take(yb.reshape(nb * block, -1), dst, axis=0)
  return out, (xb, w, src, dst, bg, group_sizes)


def _blocked_bwd(block, res, dy):
  xb, w, src, dst, bg, group_sizes = res
  nb = bg.shape[0]
  dyb = _pad_rows(dy, src, nb, block)
  dxb = jnp.einsum("nbf,nkf->nbk", dyb, jnp.take(w, bg, axis=0))
  dx = jnp.take(dxb.reshape(nb * block, -1), dst, axis=0)
  dw_blocks = jnp.einsum("nbk,nbf->nkf", xb, dyb)
  dw = jax.ops.segment_sum(dw_blocks, bg, num_segments=w.shape[0], indices_are_sorted=True)
  return dx, dw.astype(w.dtype), None


_blocked.defvjp(_blocked_fwd, _blocked_bwd)


def _real_blocks(group_sizes, nb, block):
  padded = ((group_sizes + block - 1) // block) * block
  return jnp.arange(nb, dtype=jnp.int32) * block < jnp.sum(padded)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _scanned(x, w, group_sizes, block):
  out, _ = _scanned_fwd(x, w, group_sizes, block)
  return out


def _scanned_fwd(x, w, group_sizes, block):
  """Blocks in a lax.scan, each multiplying its group's weight in place (no per-block weight copies at
  once); padding-only blocks are skipped by lax.cond."""
  m, n = x.shape[0], w.shape[-1]
  src, dst, bg = _layout(group_sizes, m, block)
  nb = bg.shape[0]
  xb = _pad_rows(x, src, nb, block)
  real = _real_blocks(group_sizes, nb, block)

  def body(_, inp):
    xi, g, r = inp
    y = jax.lax.cond(r, lambda: xi @ w[g], lambda: jnp.zeros((block, n), x.dtype))
    return None, y

  _, yb = jax.lax.scan(body, None, (xb, bg, real))
  return jnp.take(yb.reshape(nb * block, n), dst, axis=0), (xb, w, src, dst, bg, group_sizes)


def _scanned_bwd(block, res, dy):
  xb, w, src, dst, bg, group_sizes = res
  nb, k = bg.shape[0], xb.shape[-1]
  dyb = _pad_rows(dy, src, nb, block)
  real = _real_blocks(group_sizes, nb, block)

  def body(dw, inp):
    xi, dyi, g, r = inp

    def live(dw):
      wg = w[g]
      return dw.at[g].add((xi.T @ dyi).astype(dw.dtype)), dyi @ wg.T

    return jax.lax.cond(r, live, lambda dw: (dw, jnp.zeros((block, k), dy.dtype)), dw)

  dw, dxb = jax.lax.scan(body, jnp.zeros_like(w), (xb, dyb, bg, real))
  return jnp.take(dxb.reshape(nb * block, k), dst, axis=0), dw, None


_scanned.defvjp(_scanned_fwd, _scanned_bwd)


SCAN_MIN_WEIGHT = 1 << 18  # elements of one expert's weight from which `scanned` beats `blocked` on CPU


def grouped_matmul(x: jax.Array, w: jax.Array, group_sizes: jax.Array, *, impl: str = "auto",
                   block: int = 64) -> jax.Array:
  """x (M, K) sorted by group, w (G, K, N), group_sizes (G,) -> (M, N)."""
  if impl == "auto":
    if jax.default_backend() != "cpu":
      impl = "ragged"
    else:  # measured here: small expert weights favour one batched matmul, large ones the scan (no copies)
      impl = "scanned" if w.shape[1] * w.shape[2] >= SCAN_MIN_WEIGHT else "blocked"
  if impl not in ("ragged", "blocked", "scanned"):
    raise ValueError(f"grouped_matmul impl: {impl!r}; allowed: 'auto', 'ragged', 'blocked', 'scanned'")
  from pangu_jax.model.regions import region  # noqa: PLC0415 (kernels must not import the model at load)

  return region("grouped_matmul", _grouped, impl=impl, block=int(block))(x, w.astype(x.dtype),
                                                                         group_sizes.astype(jnp.int32))


def _grouped(x, w, group_sizes, *, impl, block):
  """The region's decomposition (npu_grouped_matmul with group_list_type=1, counts)."""
  if impl == "ragged":
    return jax.lax.ragged_dot(x, w, group_sizes)
  if impl == "scanned":
    return _scanned(x, w, group_sizes, block)
  return _blocked(x, w, group_sizes, block)
