"""Lowering of named model regions (pangu_jax.model.regions) to the fused torch_npu ops.

`make_lowering(provider)` returns the `lowering(node)` hook of npu_backend.runtime.build_module: for a
`_region` node it returns an adapter that calls the provider's fused op with the region's inputs and
returns exactly the region's outputs; for anything else (or a region setting the op cannot express) it
returns None and the portable decomposition runs. Providers: "torch_npu" (the real plugin, on an NPU) and
"reference" (npu_backend.fused.reference: the same signatures in plain torch, used on CPU, in tests and by
the mock torch_npu).

Region -> op:
  rms_norm          npu_rms_norm(x, gamma, epsilon)[0]
  rotary            npu_rotary_mul(x, cos, sin, rotary_mode="half")
  swiglu            npu_swiglu(x, dim=-1)
  moe_gating_top_k  npu_moe_gating_top_k(logits, k, bias=, norm_type=, routed_scaling_factor=)
  moe_permute       npu_moe_init_routing_v2(x, expert_idx, expert_num=, expert_tokens_num_type=1)
  grouped_matmul    npu_grouped_matmul([x], [w], group_list=counts, group_list_type=1, split_item=2)[0]
  moe_unpermute     npu_moe_finalize_routing(rows, None, None, None, weights, src_to_dst, None)
  attention_core    npu_fusion_attention(q, k, v, head_num, "BSND", atten_mask=causal, scale=)[0]
                    (GQA too: k and v keep their num_kv_heads heads; the op groups query heads over them)
"""

from __future__ import annotations

import importlib

import torch

PROVIDERS = ("torch_npu", "reference")


def _ops(provider: str):
  return importlib.import_module("torch_npu" if provider == "torch_npu" else "npu_backend.fused.reference")


def _inverse(perm: torch.Tensor) -> torch.Tensor:
  inv = torch.empty_like(perm)
  inv[perm.long()] = torch.arange(perm.numel(), dtype=perm.dtype, device=perm.device)
  return inv


def rms_norm(x, gamma, *, statics, provider):
  return _ops(provider).npu_rms_norm(x, gamma, epsilon=statics["eps"])[0]


def rotary(x, cos, sin, *, statics, provider):
  return _ops(provider).npu_rotary_mul(x, cos, sin, rotary_mode="half")


def swiglu(h, *, statics, provider):
  return _ops(provider).npu_swiglu(h, dim=-1)


def moe_gating_top_k(logits, bias, *, statics, provider):
  sigmoid = statics["score"] == "sigmoid"
  y, idx, out = _ops(provider).npu_moe_gating_top_k(
      logits, statics["k"], bias=bias, norm_type=1 if sigmoid else 0,
      routed_scaling_factor=statics["scale"] if sigmoid else 1.0)
  if not sigmoid:
    if statics["renorm"]:
      y = y / (y.sum(-1, keepdim=True) + 1e-20)
    y = y * statics["scale"]
  return out, idx.to(torch.int32), y


def moe_permute(x, idx, *, statics, provider):
  expanded_x, src_to_dst, counts, _ = _ops(provider).npu_moe_init_routing_v2(
      x, idx, active_num=idx.numel(), expert_num=statics["num_experts"], expert_tokens_num_type=1,
      expert_tokens_num_flag=True)
  return expanded_x, _inverse(src_to_dst.to(torch.int32)), counts.to(torch.int32)


def grouped_matmul(x, w, sizes, *, statics, provider):
  return _ops(provider).npu_grouped_matmul([x], [w], group_list=sizes, group_list_type=1, split_item=2)[0]


def moe_unpermute(rows, order, w, *, statics, provider):
  return _ops(provider).npu_moe_finalize_routing(rows, None, None, None, w, _inverse(order), None)


def attention_core(q, k, v, q_pos, k_pos, *, statics, provider):
  mask = (q_pos[:, None, :, None] < k_pos[:, None, None, :])  # True = masked out (future keys)
  return _ops(provider).npu_fusion_attention(q, k, v, q.shape[2], "BSND", atten_mask=mask,
                                             scale=statics["scale"])[0]


ADAPTERS = {f.__name__: f for f in (rms_norm, rotary, swiglu, moe_gating_top_k, moe_permute, grouped_matmul,
                                    moe_unpermute, attention_core)}


def _expressible(name: str, statics: dict) -> bool:
  # The op renormalises sigmoid top-k weights (our reading); without renormalisation keep the decomposition.
  # Group-limited routing (statics `groups`) keeps the decomposition too: its k_group / group_count semantics
  # are not pinned down by a reference we can test against.
  if name != "moe_gating_top_k":
    return True
  return not ((statics["score"] == "sigmoid" and not statics["renorm"]) or "groups" in statics)


class Lowering:
  """The build_module hook; records which regions it lowered (for reports and tests)."""

  def __init__(self, provider: str):
    if provider not in PROVIDERS:
      raise ValueError(f"lowering provider {provider!r}; allowed: {', '.join(PROVIDERS)}")
    self.provider = provider
    self.lowered: dict[str, int] = {}

  def __call__(self, node):
    if node["op"] != "_region":
      return None
    name, statics = node["params"]["name"], node["params"]["statics"]
    if name not in ADAPTERS or not _expressible(name, statics):
      return None
    self.lowered[name] = self.lowered.get(name, 0) + 1
    return _Bound(ADAPTERS[name], self.provider)


class _Bound:
  """An adapter with its provider bound (a module-level class, so fx can name it in generated code)."""

  def __init__(self, fn, provider):
    self.fn, self.provider = fn, provider
    self.__name__ = f"npu_{fn.__name__}"

  def __call__(self, *args, statics):
    return self.fn(*args, statics=statics, provider=self.provider)
