"""Parameter counting by abstract evaluation (no weights are allocated)."""

from __future__ import annotations

import math

import jax

from pangu_jax.model import transformer


def abstract_params(cfg_model):
  """ShapeDtypeStructs of every parameter, via jax.eval_shape."""
  return jax.eval_shape(lambda: transformer.init_params(jax.random.key(0), cfg_model))


def _size(tree) -> int:
  return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def count_params(cfg_model) -> dict:
  """Total and activated-per-token parameter counts (MTP reported separately).

  `activated` counts everything a token passes through: embedding row, attention,
  dense FFNs, router, shared experts, top_k of the routed experts, norms and head.
  """
  p = abstract_params(cfg_model)
  breakdown = {"embedding": _size(p["embed"]), "head": _size(p["head"]), "final_norm": _size(p["final_norm"])}
  routed = 0
  for name in ("dense_layers", "moe_layers"):
    if name not in p:
      continue
    layers = p[name]
    breakdown["attention"] = breakdown.get("attention", 0) + _size(layers["attn"])
    breakdown["norms"] = breakdown.get("norms", 0) + sum(_size(v) for k, v in layers.items() if k.endswith("norm"))
    if "mlp" in layers:
      breakdown["dense_ffn"] = _size(layers["mlp"])
    if "moe" in layers:
      m = layers["moe"]
      routed = _size(m["experts"])
      breakdown["routed_experts"] = routed
      breakdown["shared_experts"] = _size(m.get("shared", {}))
      breakdown["router"] = _size(m["router"]) + _size(m.get("router_bias", {}))
  total = sum(breakdown.values())
  activated = total - routed + routed * cfg_model.top_k // cfg_model.num_routed_experts
  mtp = _size(p.get("mtp", {}))
  return {"total_params": total, "activated_params": activated, "mtp_params": mtp, "breakdown": breakdown}
