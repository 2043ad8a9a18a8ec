"""Expert parallelism: the routed experts under `shard_map`, tokens exchanged by all-to-all.

Each device routes its own tokens (router weights are replicated), sends every assignment to the device that
holds its expert, runs its local experts as one grouped matmul, and sends the results back, where they are
combined with the routing weights. Buffers are static and sized for the worst case (every assignment of a device
going to one destination), so nothing is ever dropped and the layer computes exactly the single-device dropless
function; the price is buffer memory and padding rows (zero rows in a zero-weight padding group).

Two exchanges, chosen by `config.parallel.hier_a2a`:

* flat: one all-to-all over the whole EP group; a token with k experts on one remote node crosses the
  inter-node links k times.
* hierarchical (Pangu Ultra MoE's): (1) an all-to-all over `expert_node` sends each token once to each node that
  holds any of its experts (with its k expert ids and weights); (2) an all-to-all over `expert` (plus `tensor` with
  TP-extend-EP) delivers it inside the node to each expert's device. On the way back each node first combines the
  weighted outputs of its experts (one row per token per node), then one inter-node exchange returns it.

Both are the same function: the hierarchical path sums a token's per-node partial sums, which for top-2 (or any
k when no two of a token's experts share a node) is the same floating-point sum as the flat path. Tests compare
them, and count the rows that cross the inter-node axis (returned as a statistic by both paths).

Tensor parallelism: without TP-extend-EP each tensor rank holds a 1/tp slice of every local expert's ffn dim and
the partial outputs are summed over `tensor` (the tokens are replicated over it). With TP-extend-EP the tensor
axis instead splits the *set* of experts: each tensor rank takes 1/tp of its device's tokens, the exchange runs over
(expert_node, expert, tensor), and the outputs are gathered back over `tensor` (a psum of disjoint slices).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from pangu_jax.kernels import grouped_matmul
from pangu_jax.model.moe import swiglu
from pangu_jax.parallel.mesh import BATCH_AXES, Layout


def _slots(dest: jax.Array, valid: jax.Array, n: int):
  """Position of each item within its destination's buffer (stable order), for items with `valid`."""
  d = jnp.where(valid, dest, n)  # invalid items sort last, into a virtual destination n
  order = jnp.argsort(d, stable=True)
  counts = jnp.bincount(d, length=n + 1)
  starts = jnp.cumsum(counts) - counts
  pos_sorted = jnp.arange(d.shape[0]) - starts[d[order]]
  return jnp.zeros_like(d).at[order].set(pos_sorted)


def _exchange(rows: jax.Array, meta: tuple, dest: jax.Array, valid: jax.Array, n: int, axes):
  """Sends rows[i] (and each meta[j][i]) to device dest[i] of the group `axes` (n devices).

  Returns (received rows (n*C, d), received metas, received valid (n*C,), slot positions for the way back);
  C = number of items (the worst case: all to one destination)."""
  c = rows.shape[0]
  pos = _slots(dest, valid, n)
  tgt = (jnp.where(valid, dest, n), pos)  # row n is out of range: dropped by the scatter

  def send(a, fill):
    buf = jnp.full((n, c) + a.shape[1:], fill, a.dtype).at[tgt].set(a, mode="drop")
    return jax.lax.all_to_all(buf, axes, 0, 0).reshape((n * c,) + a.shape[1:])

  got_rows = send(rows, 0)
  got_meta = tuple(send(m, f) for m, f in meta)
  got_valid = send(valid, False)
  return got_rows, got_meta, got_valid, (tgt, c)


def _return(y: jax.Array, back, n: int, axes) -> jax.Array:
  """The reverse of `_exchange`: y (n*C, d) on the receiver -> (items, d) on the sender (zeros where invalid)."""
  tgt, c = back
  got = jax.lax.all_to_all(y.reshape((n, c) + y.shape[1:]), axes, 0, 0)
  return got.at[tgt].get(mode="fill", fill_value=0)


def _vary_like(*arrays):
  """Marks every array as varying over the union of their manual axes, so that the grouped matmul's custom VJP
  sees operands of one type (the transpose of that marking is the psum that reduces dW over e.g. `data`)."""
  axes = set()
  for a in arrays:
    axes |= set(jax.typeof(a).vma)
  return [jax.lax.pvary(a, tuple(sorted(axes - set(jax.typeof(a).vma)))) for a in arrays]


def _local_experts(x, ids, valid, w_in, w_out, e_loc: int, tensor_psum: bool):
  """Rows x (R, d) with local expert ids -> outputs (R, d); invalid rows go to a zero-weight padding group."""
  x, w_in, w_out = _vary_like(x, w_in, w_out)
  g = jnp.where(valid, ids, e_loc)
  order = jnp.argsort(g, stable=True)
  sizes = jnp.bincount(g, length=e_loc + 1).astype(jnp.int32)
  pad = lambda w: jnp.concatenate([w, jnp.zeros((1,) + w.shape[1:], w.dtype)])
  xs = x[order]
  h = swiglu(grouped_matmul(xs, pad(w_in).astype(x.dtype), sizes))
  ys = grouped_matmul(h, pad(w_out).astype(x.dtype), sizes)
  if tensor_psum:
    ys = jax.lax.psum(ys, "tensor")
  return jnp.zeros_like(ys).at[order].set(ys)


def _flat(x, idx, w, w_in, w_out, *, layout: Layout, e_loc: int, tensor_psum: bool):
  t, k = idx.shape
  axes, n = layout.expert_axes, layout.expert_shards
  flat_e = idx.reshape(-1)
  tok = jnp.arange(t * k) // k
  dest = flat_e // e_loc
  valid = jnp.ones_like(dest, bool)
  rows, (ids,), got_valid, back = _exchange(x[tok], ((flat_e % e_loc, 0),), dest, valid, n, axes)
  y = _local_experts(rows, ids, got_valid, w_in, w_out, e_loc, tensor_psum)
  y_assign = _return(y, back, n, axes).reshape(t, k, -1)
  out = jnp.einsum("tkd,tk->td", y_assign, w.astype(x.dtype))
  per_node = n // layout.expert_node
  crossing = jnp.sum(dest // per_node != _my_device(layout) // per_node)
  return out, crossing


def _my_device(layout: Layout):
  """This device's index within its EP group (row-major over the group's axes)."""
  i = jnp.zeros((), jnp.int32)
  for a in layout.expert_axes:
    i = i * jax.lax.axis_size(a) + jax.lax.axis_index(a)
  return i


def _hierarchical(x, idx, w, w_in, w_out, *, layout: Layout, e_loc: int, tensor_psum: bool):
  t, k = idx.shape
  n_node = layout.expert_node
  intra_axes = layout.expert_axes[1:]
  per_node = layout.expert_shards // n_node
  node_of = (idx // e_loc) // per_node  # (T, k)
  # (1) inter-node: token t goes once to every node holding one of its experts
  pair_tok = jnp.repeat(jnp.arange(t), n_node)
  pair_node = jnp.tile(jnp.arange(n_node), t)
  need = jnp.any(node_of[pair_tok] == pair_node[:, None], axis=-1)
  rows1, (idx1, w1), valid1, back1 = _exchange(x[pair_tok], ((idx[pair_tok], -1), (w[pair_tok], 0)), pair_node,
                                               need, n_node, "expert_node")
  crossing = jnp.sum(need & (pair_node != _my_device(layout) // per_node))
  # (2) intra-node: each received token to the devices of its experts on this node
  r1 = rows1.shape[0]
  flat_e = idx1.reshape(-1)
  tok2 = jnp.arange(r1 * k) // k
  mine = valid1[tok2] & ((flat_e // e_loc) // per_node == _my_device(layout) // per_node)
  rows2, (ids2,), valid2, back2 = _exchange(rows1[tok2], ((flat_e % e_loc, 0),), (flat_e // e_loc) % per_node, mine,
                                            per_node, intra_axes)
  y2 = _local_experts(rows2, ids2, valid2, w_in, w_out, e_loc, tensor_psum)
  y_assign = _return(y2, back2, per_node, intra_axes).reshape(r1, k, -1)
  partial = jnp.einsum("rkd,rk->rd", y_assign, (w1 * mine.reshape(r1, k)).astype(x.dtype))
  y_pair = _return(partial, back1, n_node, "expert_node").reshape(t, n_node, -1)
  return jnp.sum(y_pair, axis=1), crossing


def make_dispatch(mesh, layout: Layout, num_experts: int):
  """A `moe_impl` replacement: dispatch(experts, x (T, d), idx, w, cfg) -> (out, dropped=0), EP over `mesh`.

  `dispatch.with_stats(experts, x, idx, w)` returns (out, rows sent across the inter-node axis, summed over the
  mesh) for the tests and the docs' byte counts."""
  e_loc = num_experts // layout.expert_shards
  tensor_psum = layout.tensor > 1 and not layout.tp_extend_ep
  body = _hierarchical if (layout.hier_a2a and layout.expert_node > 1) else _flat
  tok_spec = P(BATCH_AXES, None)
  exp_axes = layout.expert_axes
  ffn_axis = "tensor" if tensor_psum else None

  def local(x, idx, w, w_in4, w_out):
    e, d, _, f = w_in4.shape
    w_in = w_in4.reshape(e, d, 2 * f)  # this rank's [gate | up] slices, side by side again
    if layout.tp_extend_ep and layout.tensor > 1:
      j, n = jax.lax.axis_index("tensor"), layout.tensor
      cut = lambda a: jax.lax.dynamic_slice_in_dim(a, j * (a.shape[0] // n), a.shape[0] // n)
      out, crossing = body(cut(x), cut(idx), cut(w), w_in, w_out, layout=layout, e_loc=e_loc, tensor_psum=False)
      # back to every rank's full token set: disjoint slices summed (exact: x + 0 = x), typed tensor-invariant
      full = jnp.zeros((n * out.shape[0],) + out.shape[1:], out.dtype)
      out = jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(full, out, j * out.shape[0], 0), "tensor")
      crossing = jax.lax.psum(crossing, "tensor")
    else:
      out, crossing = body(x, idx, w, w_in, w_out, layout=layout, e_loc=e_loc, tensor_psum=tensor_psum)
    return out, jax.lax.psum(crossing, BATCH_AXES)

  smap = jax.shard_map(
      local, mesh=mesh,
      in_specs=(tok_spec, tok_spec, tok_spec, P(exp_axes, None, None, ffn_axis), P(exp_axes, ffn_axis, None)),
      out_specs=(tok_spec, P()))

  def with_stats(experts, x, idx, w):
    e, d, two_f = experts["w_in"].shape
    # gate | up split together on the ffn dim: (E, d, 2, f), so each tensor rank gets matching halves
    return smap(x, idx, w, experts["w_in"].reshape(e, d, 2, two_f // 2), experts["w_out"])

  def dispatch(experts, x, idx, w, cfg):
    del cfg
    out, _ = with_stats(experts, x, idx, w)
    return out, jnp.zeros((), jnp.int32)

  dispatch.with_stats = with_stats
  return dispatch
