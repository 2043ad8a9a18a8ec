"""The Pangu Ultra MoE transformer as pure functions over a parameter pytree.

Parameters (nested dicts of arrays):
  embed        (V, d)
  dense_layers the first `num_dense_layers` blocks, stacked on a leading layer axis
  moe_layers   the remaining blocks, stacked likewise
  final_norm   (d,)
  head         (d, V) (untied from the embedding)
  mtp          multi-token-prediction modules, stacked on a leading depth axis

A block (layer order as in Huawei's code):
  h = x + post_attn_norm(Attention(attn_norm(x)))   (MLA or GQA: `config.model.attention`)
  y = h + post_mlp_norm(FFN_or_MoE(mlp_norm(h)))
With `sandwich_norm=False` the post norms are absent (plain pre-norm).
With the depth-scaled sandwich norm (DSSN) the post-norm gammas start at
c_attn / sqrt(L) and c_mlp / sqrt(L); every other gamma starts at 1.

Layers of one kind run under `jax.lax.scan`, so compile time does not grow with
depth.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pangu_jax.model import attention, moe
from pangu_jax.model.init import embed_std, logical, logical_axes, normal, stacked, unbox, weight_std
from pangu_jax.model.norms import rms_norm

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

REMAT_POLICIES = {
    # "fine": keep every matmul output, recompute norms, activations and permutations.
    "fine": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
    # "offload": like "fine", but the matmul outputs wait in host memory (pinned_host) instead of device memory.
    "offload": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}


class ModelOutput(NamedTuple):
  logits: jax.Array  # (B, S, V) float32
  mtp_logits: jax.Array | None  # (D, B, S, V): depth j predicts the token j+2 positions ahead
  hidden: jax.Array  # (B, S, d): last block's output, before the final norm
  stats: moe.MoeStats | None  # stacked over MoE layers (leading axis = MoE layer)
  layer_hidden: jax.Array | None = None  # (L, B, S, d): each block's output, when collected


def compute_dtype(cfg):
  return DTYPES[cfg.dtype]


def param_dtype(cfg):
  return DTYPES[cfg.param_dtype]


def init_block(key: jax.Array, cfg, kind: str) -> dict:
  """One block's parameters, as `Logical` (array, axis names) pairs. kind: 'dense' or 'moe'."""
  dt = param_dtype(cfg)
  d, L = cfg.hidden_size, cfg.num_layers
  k_attn, k_ffn = jax.random.split(key)
  p = {"attn": attention.init_attention(k_attn, cfg, dt), "attn_norm": logical(jnp.ones((d,), dt), "embed"),
       "mlp_norm": logical(jnp.ones((d,), dt), "embed")}
  if cfg.sandwich_norm:
    p["post_attn_norm"] = logical(jnp.full((d,), cfg.dssn_c_attn / math.sqrt(L), dt), "embed")
    p["post_mlp_norm"] = logical(jnp.full((d,), cfg.dssn_c_mlp / math.sqrt(L), dt), "embed")
  if kind == "dense":
    p["mlp"] = moe.init_mlp(k_ffn, d, cfg.dense_ffn_dim, weight_std(cfg), dt)
  else:
    p["moe"] = moe.init_moe(k_ffn, cfg, dt)
  return p


def _init_stack(key, n, cfg, kind, axis):
  return stacked(jax.vmap(lambda k: init_block(k, cfg, kind))(jax.random.split(key, n)), axis)


def num_moe_layers(cfg) -> int:
  return cfg.num_layers - cfg.num_dense_layers


def mtp_block_kind(cfg) -> str:
  """MTP blocks use the main model's last-layer kind (MoE unless the model is all dense)."""
  return "moe" if num_moe_layers(cfg) > 0 else "dense"


def init_logical_params(key: jax.Array, cfg) -> dict:
  """All parameters of the model (main model plus MTP modules) as `Logical` (array, axis names) pairs.

  Stacked layers get a leading `dense_layers` / `moe_layers` / `mtp_depth` axis."""
  dt = param_dtype(cfg)
  d, v = cfg.hidden_size, cfg.vocab_size
  ks = jax.random.split(key, 5)
  params = {
      "embed": logical(normal(ks[0], (v, d), embed_std(cfg), dt), "vocab", "embed"),
      "final_norm": logical(jnp.ones((d,), dt), "embed"),
      "head": logical(normal(ks[1], (d, v), weight_std(cfg), dt), "embed", "vocab"),
  }
  if cfg.num_dense_layers > 0:
    params["dense_layers"] = _init_stack(ks[2], cfg.num_dense_layers, cfg, "dense", "dense_layers")
  if num_moe_layers(cfg) > 0:
    params["moe_layers"] = _init_stack(ks[3], num_moe_layers(cfg), cfg, "moe", "moe_layers")
  if cfg.mtp_depth > 0:

    def init_mtp(k):
      k1, k2 = jax.random.split(k)
      return {
          "hidden_norm": logical(jnp.ones((d,), dt), "embed"),
          "embed_norm": logical(jnp.ones((d,), dt), "embed"),
          "proj": logical(normal(k1, (2 * d, d), weight_std(cfg), dt), "mtp_in", "embed"),
          "block": init_block(k2, cfg, mtp_block_kind(cfg)),
          "out_norm": logical(jnp.ones((d,), dt), "embed"),
      }

    params["mtp"] = stacked(jax.vmap(init_mtp)(jax.random.split(ks[4], cfg.mtp_depth)), "mtp_depth")
  return params


def init_params(key: jax.Array, cfg) -> dict:
  """All parameters of the model (main model plus MTP modules): a nested dict of arrays."""
  return unbox(init_logical_params(key, cfg))


def param_axes(cfg) -> dict:
  """The logical axis names of every parameter: the tree of `init_params` with a tuple of names per array
  (from the same declarations as the init; nothing is computed)."""
  return logical_axes(jax.eval_shape(lambda: init_logical_params(jax.random.key(0), cfg)))


def block(p: dict, x: jax.Array, cfg, *, positions=None, cache=None, start=None, dispatch=None):
  """One transformer block. Returns (y, MoeStats or None, new cache or None).

  Without a cache: causal attention over `positions` (B, S). With a cache: the
  tokens sit at start..start+S-1 and attend to the cache (inference). `dispatch`: see `moe.moe`.
  """
  eps = cfg.norm_eps
  h = rms_norm(x, p["attn_norm"], eps)
  if cache is None:
    a, new_cache = attention.attend(p["attn"], h, positions, cfg), None
  else:
    a, new_cache = attention.attend_cached(p["attn"], h, cache, start, cfg)
  if "post_attn_norm" in p:
    a = rms_norm(a, p["post_attn_norm"], eps)
  x = x + a
  h = rms_norm(x, p["mlp_norm"], eps)
  if "moe" in p:
    m, stats = moe.moe(p["moe"], h, cfg, dispatch)
  else:
    m, stats = moe.mlp(p["mlp"], h), None
  if "post_mlp_norm" in p:
    m = rms_norm(m, p["post_mlp_norm"], eps)
  return x + m, stats, new_cache


def _scan_blocks(stack, x, cfg, positions, remat, caches=None, start=None, collect=False, dispatch=None):
  """Runs stacked blocks under lax.scan; returns (x, stacked stats, stacked caches, per-layer outputs or None)."""

  def body(carry, layer):
    p, cache = layer
    y, stats, new_cache = block(p, carry, cfg, positions=positions, cache=cache, start=start, dispatch=dispatch)
    return y, (stats, new_cache, y if collect else None)

  if remat in REMAT_POLICIES and caches is None:
    body = jax.checkpoint(body, policy=REMAT_POLICIES[remat])
  x, (stats, new_caches, hidden) = jax.lax.scan(body, x, (stack, caches))
  return x, stats, new_caches, hidden


def embed(params: dict, tokens: jax.Array, cfg) -> jax.Array:
  return jnp.take(params["embed"], tokens, axis=0).astype(compute_dtype(cfg))


def logits_from_hidden(params: dict, norm_gamma: jax.Array, h: jax.Array, cfg) -> jax.Array:
  h = rms_norm(h, norm_gamma, cfg.norm_eps)
  return (h @ params["head"].astype(h.dtype)).astype(jnp.float32)


def mtp_input(p: dict, params: dict, h_prev: jax.Array, next_tokens: jax.Array, cfg) -> jax.Array:
  """DeepSeek-V3 MTP input: proj([norm(h_prev); norm(embed(next token))])."""
  e = embed(params, next_tokens, cfg)
  z = jnp.concatenate([rms_norm(h_prev, p["hidden_norm"], cfg.norm_eps), rms_norm(e, p["embed_norm"], cfg.norm_eps)],
                      axis=-1)
  return z @ p["proj"].astype(z.dtype)


def forward(params: dict, tokens: jax.Array, cfg, *, remat: str = "none", collect_hidden: bool = False,
            dispatch=None) -> ModelOutput:
  """Full causal forward. tokens (B, S) int -> ModelOutput.

  MTP depth j (0-based) at position i combines the depth-(j-1) state at i (the
  main model's for j = 0) with the embedding of token i+j+1, and predicts token
  i+j+2. Positions whose inputs run past the sequence (the last j+1) see a
  wrapped-around token; the loss masks them. `dispatch` replaces the MoE dispatch (expert parallelism).
  """
  b, s = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(s), (b, s))
  x = embed(params, tokens, cfg)
  stats, hidden = None, []
  if "dense_layers" in params:
    x, _, _, h = _scan_blocks(params["dense_layers"], x, cfg, positions, remat, collect=collect_hidden)
    hidden.append(h)
  if "moe_layers" in params:
    x, stats, _, h = _scan_blocks(params["moe_layers"], x, cfg, positions, remat, collect=collect_hidden,
                                    dispatch=dispatch)
    hidden.append(h)
  logits = logits_from_hidden(params, params["final_norm"], x, cfg)
  mtp_logits = mtp_heads(params, x, tokens, positions, cfg, dispatch) if cfg.mtp_depth > 0 else None
  layer_hidden = jnp.concatenate(hidden) if collect_hidden else None
  return ModelOutput(logits=logits, mtp_logits=mtp_logits, hidden=x, stats=stats, layer_hidden=layer_hidden)


def mtp_heads(params: dict, x: jax.Array, tokens: jax.Array, positions: jax.Array, cfg, dispatch=None) -> jax.Array:
  """(D, B, S, V) logits of the MTP modules on the main model's last hidden state x."""
  h, outs = x, []
  for j in range(cfg.mtp_depth):
    p = jax.tree.map(lambda a, j=j: a[j], params["mtp"])
    z = mtp_input(p, params, h, jnp.roll(tokens, -(j + 1), axis=1), cfg)
    h, _, _ = block(p["block"], z, cfg, positions=positions, dispatch=dispatch)
    outs.append(logits_from_hidden(params, p["out_norm"], h, cfg))
  return jnp.stack(outs)


# ----------------------------------------------------------------------------- inference with a KV cache


def init_cache(cfg, batch: int, max_len: int) -> dict:
  """Empty caches for every layer (stacked like the parameters) and the first MTP module (MLA: the compressed
  cache; GQA: k and v per head)."""
  dt = compute_dtype(cfg)

  def stack(n):
    one = attention.init_cache(cfg, batch, max_len, dt)
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), one)

  cache = {}
  if cfg.num_dense_layers > 0:
    cache["dense_layers"] = stack(cfg.num_dense_layers)
  if num_moe_layers(cfg) > 0:
    cache["moe_layers"] = stack(num_moe_layers(cfg))
  if cfg.mtp_depth > 0:
    cache["mtp"] = attention.init_cache(cfg, batch, max_len, dt)
  return cache


def forward_cached(params: dict, tokens: jax.Array, cache: dict, start: jax.Array, cfg):
  """Main model on new tokens at start..start+S-1. Returns (logits, hidden, new cache)."""
  x = embed(params, tokens, cfg)
  new = dict(cache)
  for name in ("dense_layers", "moe_layers"):
    if name in params:
      x, _, new[name], _ = _scan_blocks(params[name], x, cfg, None, "none", caches=cache[name], start=start)
  return logits_from_hidden(params, params["final_norm"], x, cfg), x, new


def mtp_cached(params: dict, h_prev: jax.Array, next_tokens: jax.Array, cache: dict, start: jax.Array, cfg):
  """The first MTP module on positions start..start+S-1 with its own cache. Returns (logits, new cache)."""
  p = jax.tree.map(lambda a: a[0], params["mtp"])
  z = mtp_input(p, params, h_prev, next_tokens, cfg)
  h, _, mtp_cache = block(p["block"], z, cfg, cache=cache["mtp"], start=start)
  return logits_from_hidden(params, p["out_norm"], h, cfg), {**cache, "mtp": mtp_cache}
