"""Attention: multi-head latent attention (MLA) with decoupled RoPE and its compressed KV cache, or grouped-query
attention (GQA) with a per-head KV cache; `config.model.attention` chooses.

MLA training path (`mla`): queries optionally through a low-rank bottleneck
(q_a -> RMSNorm -> q_b); keys and values from one latent c_kv (kv_a -> RMSNorm ->
kv_b) plus a single rotary key shared by all heads (the "decoupled" part), causal.

MLA inference path (`mla_cached`): the cache stores, per token, only the latent c_kv
(kv_lora_rank) and the rotary key (qk_rope_head_dim); kv_b is absorbed into the
query (for scores) and into the output (for values), so keys and values are never
materialised per head. For Pangu Ultra MoE this is 576 numbers per token and
layer instead of 128 x (192 + 128) = 40960.

GQA (`gqa`, `gqa_cached`), our definitions: with H = num_heads, G = num_kv_heads (G divides H) and
D = head_dim, q = x Wq (H x D), k = x Wk and v = x Wv (G x D each); RoPE over the full D of q and k (the same
'half' / rotate-half layout and the same `rope_scaling`, YaRN included, as MLA's rotary part); query head h
attends with key/value head h // (H / G) (consecutive query heads share one; the grouping of
`npu_fusion_attention` and of torch's `scaled_dot_product_attention(enable_gqa=True)`); causal softmax with scale
1/sqrt(D) (times the same YaRN correction as MLA, `softmax_scale`); output projection H x D -> d. No q/k norm, no
biases. The cache holds k (after RoPE) and v per token and layer: 2 x G x D numbers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from pangu_jax.model.init import logical, normal, weight_std
from pangu_jax.model.norms import rms_norm
from pangu_jax.model.regions import region

NEG_INF = -1e30


def init_mla(key: jax.Array, cfg, dtype) -> dict:
  """The MLA weights as `Logical` (array, axis names) pairs: latents as produced (`q_lora`, `kv_lora`) and as
  consumed (`q_lora_in`, `kv_lora_in`) are different logical axes, heads x head dim is `heads`."""
  d, h = cfg.hidden_size, cfg.num_heads
  qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
  std = weight_std(cfg)
  ks = jax.random.split(key, 5)
  p = {}
  if cfg.q_lora_rank > 0:
    p["q_a"] = logical(normal(ks[0], (d, cfg.q_lora_rank), std, dtype), "embed", "q_lora")
    p["q_a_norm"] = logical(jnp.ones((cfg.q_lora_rank,), dtype), "q_lora")
    p["q_b"] = logical(normal(ks[1], (cfg.q_lora_rank, h * qk), std, dtype), "q_lora_in", "heads")
  else:
    p["q"] = logical(normal(ks[0], (d, h * qk), std, dtype), "embed", "heads")
  p["kv_a"] = logical(normal(ks[2], (d, cfg.kv_lora_rank + cfg.qk_rope_head_dim), std, dtype), "embed", "kv_lora")
  p["kv_a_norm"] = logical(jnp.ones((cfg.kv_lora_rank,), dtype), "kv_lora")
  p["kv_b"] = logical(normal(ks[3], (cfg.kv_lora_rank, h * (cfg.qk_nope_head_dim + cfg.v_head_dim)), std, dtype),
                      "kv_lora_in", "heads")
  p["o"] = logical(normal(ks[4], (h * cfg.v_head_dim, d), std, dtype), "heads", "embed")
  return p


def is_gqa(cfg) -> bool:
  return getattr(cfg, "attention", "mla") == "gqa"


def init_attention(key: jax.Array, cfg, dtype) -> dict:
  """The attention weights `config.model.attention` asks for (`init_mla` or `init_gqa`)."""
  return init_gqa(key, cfg, dtype) if is_gqa(cfg) else init_mla(key, cfg, dtype)


def init_gqa(key: jax.Array, cfg, dtype) -> dict:
  """The GQA weights as `Logical` pairs, drawn like every other weight matrix (`weight_std`: TinyInit or
  init_std): query and output heads x head dim are `heads`, key and value heads x head dim `kv_heads`."""
  d, h, g, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  std = weight_std(cfg)
  ks = jax.random.split(key, 4)
  return {
      "q": logical(normal(ks[0], (d, h * hd), std, dtype), "embed", "heads"),
      "k": logical(normal(ks[1], (d, g * hd), std, dtype), "embed", "kv_heads"),
      "v": logical(normal(ks[2], (d, g * hd), std, dtype), "embed", "kv_heads"),
      "o": logical(normal(ks[3], (h * hd, d), std, dtype), "heads", "embed"),
  }


def rope_dim(cfg) -> int:
  """The rotated dims per head: head_dim under GQA, qk_rope_head_dim under MLA."""
  return cfg.head_dim if is_gqa(cfg) else cfg.qk_rope_head_dim


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
  return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_frequencies(cfg) -> tuple[np.ndarray, float]:
  """The rotary inverse frequencies (`rope_dim` / 2,) float32 and the factor cos and sin are scaled by.

  `rope_scaling="none"`: theta^(-2i/dim), factor 1. `"yarn"` (our definition, the semantics of DeepSeek-V3's
  `rope_scaling` block): with s = rope_factor, dims whose wavelength completes more than `rope_beta_fast`
  rotations over `rope_original_max_len` positions keep their frequency, dims with fewer than `rope_beta_slow`
  are divided by s, and a linear ramp between the two (bounds floored / ceiled to whole dims, clipped to
  [0, dim - 1]) blends them; cos and sin are scaled by m(s, mscale) / m(s, mscale_all_dim) when both are
  non-zero, else by m(s, 1), with m(s, a) = 0.1 a ln s + 1 (1 for s <= 1). The softmax-scale half of the
  correction is in `softmax_scale`."""
  dim, base = rope_dim(cfg), float(cfg.rope_theta)
  pos_freqs = (base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))).astype(np.float32)
  extrapolation = (1.0 / pos_freqs).astype(np.float32)
  if cfg.rope_scaling == "none":
    return extrapolation, 1.0
  s = float(cfg.rope_factor)
  interpolation = (1.0 / (s * pos_freqs)).astype(np.float32)

  def correction_dim(rotations):
    return dim * math.log(cfg.rope_original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

  low = max(math.floor(correction_dim(cfg.rope_beta_fast)), 0)
  high = min(math.ceil(correction_dim(cfg.rope_beta_slow)), dim - 1)
  if low == high:
    high += 0.001
  ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
  keep = (1 - ramp).astype(np.float32)
  inv = (interpolation * (1 - keep) + extrapolation * keep).astype(np.float32)
  if cfg.rope_mscale and cfg.rope_mscale_all_dim:
    factor = _yarn_mscale(s, cfg.rope_mscale) / _yarn_mscale(s, cfg.rope_mscale_all_dim)
  else:
    factor = _yarn_mscale(s)
  return inv, float(factor)


def rope_tables(positions: jax.Array, cfg) -> tuple[jax.Array, jax.Array]:
  """cos and sin tables (..., `rope_dim`) for the 'half' rotary layout (npu_rotary_mul mode 'half'),
  with `cfg`'s RoPE scaling (`rope_frequencies`)."""
  dim = rope_dim(cfg)
  if cfg.rope_scaling == "none":
    inv = cfg.rope_theta ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    factor = 1.0
  else:
    inv, factor = rope_frequencies(cfg)
  ang = positions.astype(jnp.float32)[..., None] * inv
  ang = jnp.concatenate([ang, ang], axis=-1)
  if factor == 1.0:
    return jnp.cos(ang), jnp.sin(ang)
  return jnp.cos(ang) * factor, jnp.sin(ang) * factor


def _rotary(x, cos, sin):
  xf = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rot = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  return (xf * cos + rot * sin).astype(x.dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x * cos + rotate_half(x) * sin; x (..., S, [H,] dim), tables broadcast over heads.

  A named region (`npu_rotary_mul(x, cos, sin, rotary_mode='half')`)."""
  return region("rotary", _rotary)(x, cos, sin)


def _attention_core(q, k, v, q_pos, k_pos, *, scale):
  """Causal softmax attention, q (B, S, H, Dqk), k (B, T, G, Dqk), v (B, T, G, Dv), positions (B, S) / (B, T).

  G = H (MLA, MHA) or a divisor of H (GQA: query head h reads key/value head h // (H / G))."""
  h, g = q.shape[2], k.shape[2]
  if g == h:
    scores = jnp.einsum("bshd,bthd->bhst", q, k)
    mask = q_pos[:, None, :, None] >= k_pos[:, None, None, :]
    probs = _softmax(scores * scale, mask).astype(q.dtype)
    return jnp.einsum("bhst,bthd->bshd", probs, v)
  b, s = q.shape[:2]
  qg = q.reshape(b, s, g, h // g, q.shape[-1])
  scores = jnp.einsum("bsgrd,btgd->bgrst", qg, k)
  mask = q_pos[:, None, None, :, None] >= k_pos[:, None, None, None, :]
  probs = _softmax(scores * scale, mask).astype(q.dtype)
  return jnp.einsum("bgrst,btgd->bsgrd", probs, v).reshape(b, s, h, v.shape[-1])


def _queries(p, x, cfg, cos, sin):
  """(B, S, H, nope), (B, S, H, rope) with RoPE applied."""
  b, s, _ = x.shape
  dt = x.dtype
  if cfg.q_lora_rank > 0:
    q = rms_norm(x @ p["q_a"].astype(dt), p["q_a_norm"], cfg.norm_eps) @ p["q_b"].astype(dt)
  else:
    q = x @ p["q"].astype(dt)
  q = q.reshape(b, s, cfg.num_heads, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim)
  q_nope, q_rope = q[..., : cfg.qk_nope_head_dim], q[..., cfg.qk_nope_head_dim :]
  return q_nope, apply_rope(q_rope, cos[:, :, None, :], sin[:, :, None, :])


def _latents(p, x, cfg, cos, sin):
  """The per-token cache entries: normed latent (B, S, r) and rotary key (B, S, rope)."""
  kv_a = x @ p["kv_a"].astype(x.dtype)
  c = rms_norm(kv_a[..., : cfg.kv_lora_rank], p["kv_a_norm"], cfg.norm_eps)
  k_rope = apply_rope(kv_a[..., cfg.kv_lora_rank :], cos, sin)
  return c, k_rope


def _softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  scores = jnp.where(mask, scores.astype(jnp.float32), NEG_INF)
  return jax.nn.softmax(scores, axis=-1)


def softmax_scale(cfg) -> float:
  """1 / sqrt(qk head dim) (MLA: qk_nope + qk_rope; GQA: head_dim), times m(s, mscale_all_dim)^2 under YaRN with
  a non-zero `rope_mscale_all_dim` (DeepSeek-V3's correction; see `rope_frequencies`)."""
  scale = (cfg.head_dim if is_gqa(cfg) else cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5
  if cfg.rope_scaling == "yarn" and cfg.rope_mscale_all_dim:
    scale *= _yarn_mscale(cfg.rope_factor, cfg.rope_mscale_all_dim) ** 2
  return scale


def mla(p: dict, x: jax.Array, positions: jax.Array, cfg) -> jax.Array:
  """Causal MLA over a whole sequence. x (B, S, d), positions (B, S) -> (B, S, d)."""
  with jax.named_scope("attention"):
    b, s, _ = x.shape
    dt = x.dtype
    cos, sin = rope_tables(positions, cfg)
    q_nope, q_rope = _queries(p, x, cfg, cos, sin)
    c, k_rope = _latents(p, x, cfg, cos, sin)
    kv = (c @ p["kv_b"].astype(dt)).reshape(b, s, cfg.num_heads, cfg.qk_nope_head_dim + cfg.v_head_dim)
    k_nope, v = kv[..., : cfg.qk_nope_head_dim], kv[..., cfg.qk_nope_head_dim :]
    # Decoupled RoPE: the one rotary key is shared by every head.
    q = jnp.concatenate([q_nope, q_rope], axis=-1)
    k_rope_h = jnp.broadcast_to(k_rope[:, :, None, :], (b, s, cfg.num_heads, cfg.qk_rope_head_dim))
    k = jnp.concatenate([k_nope, k_rope_h], axis=-1)
    out = region("attention_core", _attention_core, scale=softmax_scale(cfg))(q, k, v, positions, positions)
    return out.reshape(b, s, cfg.num_heads * cfg.v_head_dim) @ p["o"].astype(dt)


def attend(p: dict, x: jax.Array, positions: jax.Array, cfg) -> jax.Array:
  """Causal attention over a whole sequence (`mla` or `gqa`, as `config.model.attention` says)."""
  return gqa(p, x, positions, cfg) if is_gqa(cfg) else mla(p, x, positions, cfg)


def attend_cached(p: dict, x: jax.Array, cache: dict, start: jax.Array, cfg) -> tuple[jax.Array, dict]:
  """Attention of new tokens against a cache (`mla_cached` or `gqa_cached`)."""
  return gqa_cached(p, x, cache, start, cfg) if is_gqa(cfg) else mla_cached(p, x, cache, start, cfg)


def _gqa_qkv(p, x, cfg, cos, sin):
  """q (B, S, H, D), k and v (B, S, G, D); RoPE applied to q and k."""
  b, s, _ = x.shape
  dt = x.dtype
  q = (x @ p["q"].astype(dt)).reshape(b, s, cfg.num_heads, cfg.head_dim)
  k = (x @ p["k"].astype(dt)).reshape(b, s, cfg.num_kv_heads, cfg.head_dim)
  v = (x @ p["v"].astype(dt)).reshape(b, s, cfg.num_kv_heads, cfg.head_dim)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def gqa(p: dict, x: jax.Array, positions: jax.Array, cfg) -> jax.Array:
  """Causal GQA over a whole sequence (module docstring). x (B, S, d), positions (B, S) -> (B, S, d)."""
  with jax.named_scope("attention"):
    b, s, _ = x.shape
    cos, sin = rope_tables(positions, cfg)
    q, k, v = _gqa_qkv(p, x, cfg, cos, sin)
    out = region("attention_core", _attention_core, scale=softmax_scale(cfg))(q, k, v, positions, positions)
    return out.reshape(b, s, cfg.num_heads * cfg.head_dim) @ p["o"].astype(x.dtype)


def gqa_cached(p: dict, x: jax.Array, cache: dict, start: jax.Array, cfg) -> tuple[jax.Array, dict]:
  """GQA for new tokens at positions start..start+S-1: their k (after RoPE) and v go into the cache, then the
  queries attend to every cached position up to their own (later slots, stale or empty, are masked)."""
  with jax.named_scope("attention"):
    b, s, _ = x.shape
    dt = x.dtype
    positions = jnp.broadcast_to(start + jnp.arange(s), (b, s))
    cos, sin = rope_tables(positions, cfg)
    q, k_new, v_new = _gqa_qkv(p, x, cfg, cos, sin)
    cache = {name: jax.lax.dynamic_update_slice_in_dim(cache[name], new.astype(cache[name].dtype), start, axis=1)
             for name, new in (("k", k_new), ("v", v_new))}
    k_all, v_all = cache["k"].astype(dt), cache["v"].astype(dt)
    key_pos = jnp.broadcast_to(jnp.arange(k_all.shape[1]), (b, k_all.shape[1]))
    out = _attention_core(q, k_all, v_all, positions, key_pos, scale=softmax_scale(cfg))
    return out.reshape(b, s, cfg.num_heads * cfg.head_dim) @ p["o"].astype(dt), cache


def init_cache(cfg, batch: int, max_len: int, dtype) -> dict:
  """An empty cache for one layer. MLA: the compressed one, latent and rotary key per position; GQA: k and v per
  position (num_kv_heads x head_dim each)."""
  if is_gqa(cfg):
    shape = (batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
  return {
      "c": jnp.zeros((batch, max_len, cfg.kv_lora_rank), dtype),
      "k_rope": jnp.zeros((batch, max_len, cfg.qk_rope_head_dim), dtype),
  }


def mla_cached(p: dict, x: jax.Array, cache: dict, start: jax.Array, cfg) -> tuple[jax.Array, dict]:
  """MLA for new tokens at positions start..start+S-1 against a compressed cache.

  Writes the new tokens' latents into the cache, then attends with kv_b absorbed:
  scores_nope = (q_nope W_uk^T) . c and out = (probs . c) W_uv. Entries past the
  last written position are masked, so stale values there (e.g. a rejected
  speculative draft) never matter.
  """
  with jax.named_scope("attention"):
    b, s, _ = x.shape
    dt = x.dtype
    positions = jnp.broadcast_to(start + jnp.arange(s), (b, s))
    cos, sin = rope_tables(positions, cfg)
    q_nope, q_rope = _queries(p, x, cfg, cos, sin)
    c_new, kr_new = _latents(p, x, cfg, cos, sin)
    cache = {
        "c": jax.lax.dynamic_update_slice_in_dim(cache["c"], c_new.astype(cache["c"].dtype), start, axis=1),
        "k_rope": jax.lax.dynamic_update_slice_in_dim(cache["k_rope"], kr_new.astype(cache["k_rope"].dtype), start,
                                                      axis=1),
    }
    w = p["kv_b"].astype(dt).reshape(cfg.kv_lora_rank, cfg.num_heads, cfg.qk_nope_head_dim + cfg.v_head_dim)
    w_uk, w_uv = w[..., : cfg.qk_nope_head_dim], w[..., cfg.qk_nope_head_dim :]
    c_all, kr_all = cache["c"].astype(dt), cache["k_rope"].astype(dt)
    q_lat = jnp.einsum("bshd,rhd->bshr", q_nope, w_uk)
    scores = jnp.einsum("bshr,btr->bhst", q_lat, c_all) + jnp.einsum("bshd,btd->bhst", q_rope, kr_all)
    key_pos = jnp.arange(c_all.shape[1])
    mask = key_pos[None, None, None, :] <= positions[:, None, :, None]
    probs = _softmax(scores * softmax_scale(cfg), mask).astype(dt)
    out_lat = jnp.einsum("bhst,btr->bshr", probs, c_all)
    out = jnp.einsum("bshr,rhd->bshd", out_lat, w_uv).reshape(b, s, cfg.num_heads * cfg.v_head_dim)
    return out @ p["o"].astype(dt), cache
