"""Plan search (and architecture candidates under a parameter budget): enumerate, predict, drop what does not
fit, rank by tokens/s."""

from __future__ import annotations

import copy
import itertools

from confspec import ConfigError
from pangu_jax.flops import train_flops_per_token
from pangu_jax.sim.memory import cached_count_params
from pangu_jax.sim.plan import make_plan
from pangu_jax.sim.predict import predict

DEFAULT_SPACE = {
    "tp": (1, 2, 4, 8),
    "pp": (1, 2, 4, 8, 16, 32),
    "vpp": (1, 2, 4),
    "ep": (1, 2, 4, 8, 16, 32),
    "mbs": (1, 2, 4),
    "remat": ("fine", "full", "offload", "none"),
    "tp_extend_ep": (True, False),
}


def search_plans(cfg, hw, fixed: dict, space: dict | None = None, keep_unfit: bool = False, progress=None) -> list:
  """Every plan of `space` x `fixed` that is consistent; ranked by tokens/s (fitting plans first)."""
  space = dict(space or DEFAULT_SPACE)
  for k in fixed:
    space.pop(k, None)
  keys = list(space)
  combos = list(itertools.product(*(space[k] for k in keys)))
  out = []
  for i, vals in enumerate(combos):
    over = dict(fixed)
    over.update(zip(keys, vals))
    if over.get("vpp", 1) > 1 and over.get("pp", 1) == 1:
      continue
    try:
      plan = make_plan(cfg, over)
    except ConfigError:
      continue
    if plan.vpp > 1 and plan.microbatches % plan.pp:
      continue
    r = predict(cfg, hw, plan)
    if r["fits"] or keep_unfit:
      out.append(r)
    if progress and i % 200 == 0:
      progress(i, len(combos))
  out.sort(key=lambda r: (not r["fits"], -r["tokens_per_s"]))
  return out


def architecture_candidates(cfg) -> dict:
  """The paper's comparisons (sec. 6 of the reference) at the 718B preset's budget. Our definitions (the paper
  does not give its candidates' shapes):
    experts E in 64/128/256/512: total routed parameters fixed (E x F constant, F = 2048 x 256 / E); one shared
      expert of the routed width F (the config ties the shared width to F); routed top-k chosen so that the
      activated FFN width k x F + F is as close as possible to the preset's 8 x 2048 + 2048;
    'no shared expert': the shared expert replaced by one more routed expert per token (top-9 of 256);
    66 layers: the preset's per-layer shape with 66 layers (the paper does not say how its variant was sized).
  Activated parameters and FLOPs then differ slightly between candidates, so compare MFU (or tokens/s scaled to
  equal FLOPs, `flops_normalised_tokens_per_s`) as well as raw tokens/s."""
  base = cfg.model
  width = (base.top_k + base.num_shared_experts) * base.expert_ffn_dim
  out = {}
  for e in (64, 128, 256, 512):
    c = copy.deepcopy(cfg)
    f = base.expert_ffn_dim * base.num_routed_experts // e
    c.model.update(num_routed_experts=e, expert_ffn_dim=f, num_shared_experts=1,
                   top_k=max(1, int(width / f + 0.5) - 1))
    out[f"experts{e}_shared"] = c
  c = copy.deepcopy(cfg)
  c.model.update(num_shared_experts=0, top_k=base.top_k + base.num_shared_experts)
  out["experts256_noshared"] = c
  c = copy.deepcopy(cfg)
  c.model.num_layers = 66
  out["layers66"] = c
  return out


ARCH_SPACE = {
    "tp": (4, 8),
    "pp": (4, 8, 16),
    "vpp": (1, 2),
    "ep": (2, 4, 8),
    "mbs": (1, 2),
    "remat": ("fine", "full"),
    "tp_extend_ep": (True,),
}


def search_architectures(cfg, hw, fixed: dict, space: dict | None = None, progress=None) -> list:
  """Best fitting plan of each architecture candidate, plus the candidate at the paper's own plan."""
  rows = []
  base_flops = train_flops_per_token(cfg.model, cfg.train.seq_len, include_mtp=False)
  for name, c in architecture_candidates(cfg).items():
    ranked = search_plans(c, hw, fixed, space or ARCH_SPACE)
    best = ranked[0] if ranked else None
    try:
      at_paper = predict(c, hw, make_plan(c, dict(fixed, tp=8, pp=16, vpp=2, ep=4, mbs=2, remat="fine",
                                                  tp_extend_ep=True)))
    except ConfigError:
      at_paper = None
    counts = cached_count_params(c.model)
    flops = train_flops_per_token(c.model, c.train.seq_len, include_mtp=False)
    rows.append({"name": name, "num_layers": c.model.num_layers, "experts": c.model.num_routed_experts,
                 "top_k": c.model.top_k, "expert_ffn_dim": c.model.expert_ffn_dim,
                 "shared": c.model.num_shared_experts, "total_params": counts["total_params"],
                 "activated_params": counts["activated_params"], "model_flops_per_token": flops,
                 "plans_fitting": len(ranked), "best": _short(best), "at_paper_plan": _short(at_paper),
                 "flops_normalised_tokens_per_s": best["tokens_per_s"] * flops / base_flops if best else None})
    if progress:
      progress(len(rows), 6)
  return rows


def _short(r):
  if r is None:
    return None
  return {k: r[k] for k in ("tokens_per_s", "mfu", "step_time_s", "memory_per_device_gb", "fits", "plan")}
