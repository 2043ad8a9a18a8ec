"""Mixture of experts: router, shared experts, and three dispatch implementations.

Router (DeepSeek-V3 / Pangu Ultra MoE form): logits = x W_r (fp32); scores =
sigmoid(logits) or softmax(logits); the top-k experts are selected on
scores + bias, within the best `topk_groups` of `expert_groups` groups when
grouped (bias optional, used only for selection, never for the weights and
never trained by gradient: the aux-loss-free update adjusts it); the k weights
are the selected scores, optionally renormalised to sum to 1, times
routed_scaling_factor.

Dispatch (`moe_impl`), all three computing the same function when nothing is
dropped:
  dense     every expert on every token, masked: E times the work; the reference.
  capacity  each expert takes at most C = ceil(capacity_factor * T * k / E)
            assignments, in priority order (all first choices, then all second
            choices, ...; token order within a choice); the rest are dropped and
            counted. Our dispatch is by slot index into an (E, C, d) buffer, then
            one batched einsum per matmul, instead of a (T, E, C) one-hot einsum
            whose size grows as T^2.
  dropless  assignments sorted by expert, grouped matmuls over the sorted rows
            (pangu_jax.kernels), unsorted and combined with the weights.

Each returns the routed output plus `MoeStats`: per-sequence expert counts
(B, E) (before any drop), the router scores and logits (B, S, E), and the
dropped count.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pangu_jax.kernels import grouped_matmul, permute
from pangu_jax.model.init import logical, normal, weight_std
from pangu_jax.model.regions import region


class MoeStats(NamedTuple):
  counts: jax.Array  # (B, E) int32: assignments per sequence and expert, before drops
  scores: jax.Array  # (B, S, E) float32: router scores (sigmoid or softmax)
  logits: jax.Array  # (B, S, E) float32: router logits (for the z-loss)
  topk_idx: jax.Array  # (B, S, k) int32: the selected experts
  topk_weights: jax.Array  # (B, S, k) float32: their combine weights
  dropped: jax.Array  # () int32: assignments dropped by capacity (0 otherwise)


def _swiglu(h):
  f = h.shape[-1] // 2
  return jax.nn.silu(h[..., :f]) * h[..., f:]


def swiglu(h: jax.Array) -> jax.Array:
  """silu(first half) * second half, over the last axis (a region: npu_swiglu's convention)."""
  return region("swiglu", _swiglu)(h)


def init_mlp(key: jax.Array, d: int, f: int, std: float, dtype) -> dict:
  """SwiGLU FFN weights as `Logical` pairs (fused gate|up input weight)."""
  k1, k2 = jax.random.split(key)
  return {"w_in": logical(normal(k1, (d, 2 * f), std, dtype), "embed", "mlp"),
          "w_out": logical(normal(k2, (f, d), std, dtype), "mlp", "embed")}


def mlp(p: dict, x: jax.Array) -> jax.Array:
  """SwiGLU FFN with fused gate|up input weight (d, 2F)."""
  return swiglu(x @ p["w_in"].astype(x.dtype)) @ p["w_out"].astype(x.dtype)


def init_moe(key: jax.Array, cfg, dtype) -> dict:
  """Router, routed and shared experts as `Logical` pairs (`init.unbox` gives the arrays)."""
  d, e, f = cfg.hidden_size, cfg.num_routed_experts, cfg.expert_ffn_dim
  std = weight_std(cfg)
  ks = jax.random.split(key, 4)
  p = {
      "router": logical(normal(ks[0], (d, e), std, jnp.float32), "embed", "router"),
      "experts": {
          "w_in": logical(normal(ks[1], (e, d, 2 * f), std, dtype), "experts", "embed", "expert_gate_up"),
          "w_out": logical(normal(ks[2], (e, f, d), std, dtype), "experts", "expert_mlp", "embed"),
      },
  }
  if cfg.router_bias:
    p["router_bias"] = logical(jnp.zeros((e,), jnp.float32), "router")
  if cfg.num_shared_experts > 0:
    p["shared"] = init_mlp(ks[3], d, cfg.num_shared_experts * cfg.expert_ffn_dim, std, dtype)
  return p


def _group_limit(choice, groups, topk_groups):
  """Group-limited selection (DeepSeek-V3 `n_group` / `topk_group`): the experts form `groups` equal groups, a
  group scores the sum of its two best selection scores, and every expert outside the best `topk_groups` groups
  is excluded (-inf)."""
  e = choice.shape[-1]
  grouped = choice.reshape(*choice.shape[:-1], groups, e // groups)
  group_score = jnp.sum(jax.lax.top_k(grouped, 2)[0], axis=-1)
  _, best = jax.lax.top_k(group_score, topk_groups)
  keep = jnp.any(jax.nn.one_hot(best, groups, dtype=jnp.bool_), axis=-2)
  return jnp.where(jnp.repeat(keep, e // groups, axis=-1), choice, -jnp.inf)


def _gating_top_k(logits, bias, *, k, score, renorm, scale, groups=1, topk_groups=1):
  scores = jax.nn.sigmoid(logits) if score == "sigmoid" else jax.nn.softmax(logits, axis=-1)
  choice = scores + jax.lax.stop_gradient(bias)
  if groups > 1 and topk_groups < groups:
    choice = _group_limit(choice, groups, topk_groups)
  _, idx = jax.lax.top_k(choice, k)
  w = jnp.take_along_axis(scores, idx, axis=-1)
  if renorm:
    w = w / (jnp.sum(w, axis=-1, keepdims=True) + 1e-20)
  return scores, idx.astype(jnp.int32), w * scale


def route(p: dict, x: jax.Array, cfg) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """x (T, d) -> logits, scores (T, E) fp32, expert indices (T, k) int32, weights (T, k) fp32.

  The gating after the router matmul is a region (`npu_moe_gating_top_k`); without a configured bias the
  bias input is zeros. Group-limited routing (`expert_groups` > 1) adds the statics `groups`, `topk_groups`."""
  logits = x.astype(jnp.float32) @ p["router"].astype(jnp.float32)
  bias = p["router_bias"] if cfg.router_bias else jnp.zeros((cfg.num_routed_experts,), jnp.float32)
  statics = dict(k=cfg.top_k, score=cfg.router_score, renorm=bool(cfg.norm_topk_prob),
                 scale=float(cfg.routed_scaling_factor))
  if cfg.expert_groups > 1 and cfg.topk_groups < cfg.expert_groups:
    statics.update(groups=int(cfg.expert_groups), topk_groups=int(cfg.topk_groups))
  scores, idx, w = region("moe_gating_top_k", _gating_top_k, **statics)(logits, bias)
  return logits, scores, idx, w


def _dense(experts, x, idx, w, cfg):
  e = cfg.num_routed_experts
  h = swiglu(jnp.einsum("td,edf->tef", x, experts["w_in"].astype(x.dtype)))
  y = jnp.einsum("tef,efd->ted", h, experts["w_out"].astype(x.dtype))
  combine = jnp.zeros((x.shape[0], e), jnp.float32).at[jnp.arange(x.shape[0])[:, None], idx].add(w)
  return jnp.einsum("te,ted->td", combine.astype(x.dtype), y), jnp.zeros((), jnp.int32)


def capacity(num_tokens: int, cfg) -> int:
  """Slots per expert: ceil(capacity_factor * T * k / E), at least 1 and at most T."""
  c = math.ceil(cfg.capacity_factor * num_tokens * cfg.top_k / cfg.num_routed_experts)
  return max(1, min(c, num_tokens))


def _capacity(experts, x, idx, w, cfg):
  t, k, e = x.shape[0], cfg.top_k, cfg.num_routed_experts
  c = capacity(t, cfg)
  flat_e = idx.T.reshape(-1)  # choice-major priority: all first choices, then all second...
  flat_tok = jnp.tile(jnp.arange(t), k)
  onehot = jax.nn.one_hot(flat_e, e, dtype=jnp.int32)
  pos = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=-1)
  keep = pos < c
  slot = jnp.where(keep, flat_e * c + pos, e * c)  # e*c = out of range: dropped by the scatter
  buf = jnp.zeros((e * c, x.shape[1]), x.dtype).at[slot].set(x[flat_tok], mode="drop")
  buf = buf.reshape(e, c, -1)
  h = swiglu(jnp.einsum("ecd,edf->ecf", buf, experts["w_in"].astype(x.dtype)))
  y = jnp.einsum("ecf,efd->ecd", h, experts["w_out"].astype(x.dtype)).reshape(e * c, -1)
  y_assign = jnp.take(y, slot, axis=0, mode="fill", fill_value=0)  # (k*T, d), zeros where dropped
  flat_w = w.T.reshape(-1)
  out = jnp.zeros_like(x).at[flat_tok].add(y_assign * flat_w[:, None].astype(x.dtype))
  return out, jnp.sum(~keep).astype(jnp.int32)


def _permute(x, idx, *, num_experts):
  """Token permutation (npu_moe_init_routing_v2): rows sorted by expert (stable), their source
  assignment index (token * k + slot), and tokens per expert."""
  flat_e = idx.reshape(-1)
  order = jnp.argsort(flat_e, stable=True).astype(jnp.int32)
  xs = permute.expand_sorted(x, order, permute.inverse_permutation(order))
  return xs, order, jnp.bincount(flat_e, length=num_experts).astype(jnp.int32)


def _unpermute(ys, order, w):
  """Weighted un-permutation (npu_moe_finalize_routing): out[t] = sum_j w[t, j] * ys[pos of (t, j)]."""
  t, k = w.shape
  y = permute.unsort(ys, order, permute.inverse_permutation(order)).reshape(t, k, -1)
  return jnp.einsum("tkd,tk->td", y, w.astype(ys.dtype))


def _dropless(experts, x, idx, w, cfg):
  xs, order, sizes = region("moe_permute", _permute, num_experts=cfg.num_routed_experts)(x, idx)
  gmm = dict(impl=cfg.gmm_impl, block=cfg.gmm_block_size)
  h = swiglu(grouped_matmul(xs, experts["w_in"], sizes, **gmm))
  ys = grouped_matmul(h, experts["w_out"], sizes, **gmm)
  return region("moe_unpermute", _unpermute)(ys, order, w), jnp.zeros((), jnp.int32)


DISPATCH = {"dense": _dense, "capacity": _capacity, "dropless": _dropless}


def moe(p: dict, x: jax.Array, cfg, dispatch=None) -> tuple[jax.Array, MoeStats]:
  """Routed experts plus shared experts. x (B, S, d) -> (B, S, d), MoeStats.

  `dispatch` replaces the `moe_impl` dispatch (same signature); expert parallelism passes its all-to-all one."""
  with jax.named_scope("moe"):
    b, s, d = x.shape
    xt = x.reshape(b * s, d)
    logits, scores, idx, w = route(p, xt, cfg)
    routed, dropped = (dispatch or DISPATCH[cfg.moe_impl])(p["experts"], xt, idx, w, cfg)
    out = routed
    if "shared" in p:
      out = out + mlp(p["shared"], xt)
    counts = jnp.sum(jax.nn.one_hot(idx.reshape(b, s * cfg.top_k), cfg.num_routed_experts, dtype=jnp.int32), axis=1)
    stats = MoeStats(counts=counts, scores=scores.reshape(b, s, -1), logits=logits.reshape(b, s, -1),
                     topk_idx=idx.reshape(b, s, -1), topk_weights=w.reshape(b, s, -1), dropped=dropped)
    return out.reshape(b, s, d), stats
