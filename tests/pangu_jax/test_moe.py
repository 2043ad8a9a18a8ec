"""MoE layer: router semantics, and the three dispatch implementations against a per-token numpy loop."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_model_cfg

from pangu_jax.model import moe


def _scaled_params(key, cfg):
  """MoE weights scaled so that outputs are O(1) for unit-variance inputs (not near zero)."""
  d, e, f = cfg.hidden_size, cfg.num_routed_experts, cfg.expert_ffn_dim
  ks = jax.random.split(key, 6)
  p = {
      "router": jax.random.normal(ks[0], (d, e)) / math.sqrt(d),
      "experts": {
          "w_in": jax.random.normal(ks[1], (e, d, 2 * f)) / math.sqrt(d),
          "w_out": jax.random.normal(ks[2], (e, f, d)) / math.sqrt(f) * 2,
      },
  }
  if cfg.router_bias:
    p["router_bias"] = 0.3 * jax.random.normal(ks[3], (e,))
  if cfg.num_shared_experts:
    fs = cfg.num_shared_experts * f
    p["shared"] = {"w_in": jax.random.normal(ks[4], (d, 2 * fs)) / math.sqrt(d),
                   "w_out": jax.random.normal(ks[5], (fs, d)) / math.sqrt(fs)}
  return p


def _naive_moe(p, x, cfg, capacity=None):
  """Per-token float64 loop: route, run each chosen expert, weight, add shared; optional capacity drops."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  x = np.asarray(x, np.float64).reshape(-1, cfg.hidden_size)
  t, e, k = x.shape[0], cfg.num_routed_experts, cfg.top_k
  logits = x @ p["router"]
  if cfg.router_score == "sigmoid":
    scores = 1 / (1 + np.exp(-logits))
  else:
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
  sel = scores + (p["router_bias"] if cfg.router_bias else 0)

  def expert(w_in, w_out, v):
    h = v @ w_in
    f = h.shape[-1] // 2
    a = h[:f] / (1 + np.exp(-h[:f])) * h[f:]
    return a @ w_out

  chosen = [np.argsort(-sel[i], kind="stable")[:k] for i in range(t)]
  load = np.zeros(e, int)
  keep = {}
  for j in range(k):  # priority: all first choices, then all second choices, ...
    for i in range(t):
      ex = chosen[i][j]
      keep[i, j] = capacity is None or load[ex] < capacity
      load[ex] += 1
  out = np.zeros_like(x)
  dropped = 0
  for i in range(t):
    w = scores[i, chosen[i]]
    if cfg.norm_topk_prob:
      w = w / w.sum()
    w = w * cfg.routed_scaling_factor
    for j, ex in enumerate(chosen[i]):
      if keep[i, j]:
        out[i] += w[j] * expert(p["experts"]["w_in"][ex], p["experts"]["w_out"][ex], x[i])
      else:
        dropped += 1
    if "shared" in p:
      out[i] += expert(p["shared"]["w_in"], p["shared"]["w_out"], x[i])
  return out, dropped


VARIANTS = [
    dict(),
    dict(router_score="softmax", router_bias=False, norm_topk_prob=False),
    dict(num_shared_experts=0, top_k=1, routed_scaling_factor=2.5),
    dict(num_routed_experts=8, top_k=3, router_bias=False),
]


@pytest.mark.parametrize("impl", ["dense", "dropless"])
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_moe_matches_naive_loop(impl, variant):
  cfg = small_model_cfg(moe_impl=impl, **VARIANTS[variant])
  p = _scaled_params(jax.random.key(variant), cfg)
  x = jax.random.normal(jax.random.key(100 + variant), (2, 12, cfg.hidden_size))
  out, stats = jax.jit(lambda p, x: moe.moe(p, x, cfg))(p, x)
  ref, _ = _naive_moe(p, x, cfg)
  chex.assert_shape(out, x.shape)
  chex.assert_shape(stats.counts, (2, cfg.num_routed_experts))
  chex.assert_shape(stats.scores, (2, 12, cfg.num_routed_experts))
  assert np.std(ref) > 0.3, "outputs must be O(1) for the comparison to mean anything"
  np.testing.assert_allclose(np.asarray(out).reshape(ref.shape), ref, rtol=2e-5, atol=2e-5)
  assert int(stats.dropped) == 0
  assert int(stats.counts.sum()) == 2 * 12 * cfg.top_k


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_dropless_equals_dense_forward_and_gradients(variant):
  base = small_model_cfg(**VARIANTS[variant])
  p = _scaled_params(jax.random.key(7 + variant), base)
  x = jax.random.normal(jax.random.key(8), (2, 16, base.hidden_size))
  tgt = jax.random.normal(jax.random.key(9), x.shape)

  def loss(impl):
    cfg = small_model_cfg(moe_impl=impl, **VARIANTS[variant])
    return jax.jit(jax.value_and_grad(lambda p, x: jnp.mean((moe.moe(p, x, cfg)[0] - tgt) ** 2), argnums=(0, 1)))

  (l_dense, g_dense) = loss("dense")(p, x)
  (l_drop, g_drop) = loss("dropless")(p, x)
  np.testing.assert_allclose(l_drop, l_dense, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_drop), jax.tree.leaves(g_dense)):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_capacity_equals_dense_when_ample():
  cfg = small_model_cfg(moe_impl="capacity", capacity_factor=100.0)
  p = _scaled_params(jax.random.key(1), cfg)
  x = jax.random.normal(jax.random.key(2), (2, 16, cfg.hidden_size))
  out, stats = moe.moe(p, x, cfg)
  ref, _ = moe.moe(p, x, small_model_cfg(moe_impl="dense"))
  np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)
  assert int(stats.dropped) == 0


@pytest.mark.parametrize("factor", [0.5, 1.0, 1.25])
def test_capacity_drops_exactly_the_overflow(factor):
  cfg = small_model_cfg(moe_impl="capacity", capacity_factor=factor, num_routed_experts=8, top_k=2)
  p = _scaled_params(jax.random.key(3), cfg)
  p["router_bias"] = jnp.array([2.0, 1.0, 0, 0, 0, 0, 0, 0])  # skew the load so that drops happen
  x = jax.random.normal(jax.random.key(4), (2, 16, cfg.hidden_size))
  out, stats = moe.moe(p, x, cfg)
  t = 32
  c = moe.capacity(t, cfg)
  # Independent count: per-expert load from the routing alone, minus what fits.
  load = np.asarray(stats.counts).sum(0)
  expected_dropped = int(np.maximum(load - c, 0).sum())
  assert expected_dropped > 0
  assert int(stats.dropped) == expected_dropped
  ref, ref_dropped = _naive_moe(p, x, cfg, capacity=c)
  assert ref_dropped == expected_dropped
  np.testing.assert_allclose(np.asarray(out).reshape(ref.shape), ref, rtol=2e-5, atol=2e-5)


def test_router_bias_changes_selection_not_weights():
  cfg = small_model_cfg(moe_impl="dense", norm_topk_prob=False)
  p = _scaled_params(jax.random.key(5), cfg)
  x = jax.random.normal(jax.random.key(6), (32, cfg.hidden_size))
  p["router_bias"] = jnp.array([100.0, 0, 0, 0])  # expert 0 always selected ...
  _, scores, idx, w = moe.route(p, x, cfg)
  assert np.all(np.asarray(idx)[:, 0] == 0)
  np.testing.assert_allclose(w[:, 0], scores[:, 0], rtol=1e-6)  # ... with its unbiased score as weight


@pytest.mark.parametrize("gmm_impl", ["blocked", "scanned", "ragged"])
def test_every_grouped_matmul_gives_the_dense_layer_and_its_gradients(gmm_impl):
  cfg = small_model_cfg(moe_impl="dropless", gmm_impl=gmm_impl, gmm_block_size=8, num_routed_experts=8, top_k=3)
  dense = small_model_cfg(moe_impl="dense", num_routed_experts=8, top_k=3)
  p = _scaled_params(jax.random.key(11), cfg)
  x = jax.random.normal(jax.random.key(12), (2, 16, cfg.hidden_size))

  def loss(c):
    return jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(moe.moe(p, x, c)[0])), argnums=(0, 1)))(p, x)

  (l1, g1), (l2, g2) = loss(cfg), loss(dense)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
