"""Memory per device: weights, gradients, optimiser state, activations under the remat policy, buffers.

Our definitions (Megatron-style training, the paper's setting): weights in the compute dtype, gradients
accumulated in fp32, AdamW state (fp32 master, m, v) sharded over the data-parallel replicas of each weight
(distributed optimiser; experts over their expert-DP group). The CPU trainer of this repository keeps fp32
weights, gradients and m, v unsharded. Activations: bytes one layer keeps for its backward per micro-batch,
times the layer-micro-batches stage 0 holds at the peak of the pipeline warm-up.
"""

from __future__ import annotations

import functools
import json

from pangu_jax.params import count_params
from pangu_jax.sim.ops import BYTES, CPU_GMM_BLOCK
from pangu_jax.sim.pipeline_placement import place, stages_of
from pangu_jax.sim.schedule import inflight_chunks

GB = 1e9


def _key(cfg_model) -> str:
  return json.dumps(cfg_model.to_dict() if hasattr(cfg_model, "to_dict") else dict(cfg_model), sort_keys=True)


@functools.lru_cache(maxsize=256)
def _counts(key: str) -> dict:
  import ml_collections  # noqa: PLC0415

  return count_params(ml_collections.ConfigDict(json.loads(key)))


def cached_count_params(cfg_model) -> dict:
  """pangu_jax.params.count_params, memoised on the model config (a search predicts thousands of plans)."""
  return _counts(_key(cfg_model))


def param_split(cfg_model) -> dict:
  """Parameters per transformer layer kind, split into expert and non-expert, plus embedding/head/MTP."""
  m = cfg_model
  c = cached_count_params(m)
  b = c["breakdown"]
  layers = m.num_layers
  nm = m.num_layers - m.num_dense_layers
  attn_norm_per_layer = (b.get("attention", 0) + b.get("norms", 0)) / layers
  dense_ffn_per_layer = b.get("dense_ffn", 0) / max(m.num_dense_layers, 1)
  moe_nonexpert = (b.get("shared_experts", 0) + b.get("router", 0)) / max(nm, 1)
  moe_expert = b.get("routed_experts", 0) / max(nm, 1)
  return {"dense_layer": attn_norm_per_layer + dense_ffn_per_layer, "moe_layer_nonexpert": attn_norm_per_layer +
          moe_nonexpert, "moe_layer_expert": moe_expert, "embedding": b["embedding"], "head": b["head"] +
          b["final_norm"], "mtp": c["mtp_params"], "total": c["total_params"]}


def layer_activation_bytes(m, plan, kind: str, kernels: str) -> float:
  """Bytes one layer saves for its backward for one micro-batch on one device, under plan.remat."""
  s = BYTES[plan.dtype]
  t = plan.mbs * plan.seq
  tp = plan.tp
  t_loc = t / tp
  d = m.hidden_size
  h = m.num_heads / tp
  qk = m.qk_nope_head_dim + m.qk_rope_head_dim
  if plan.remat == "full":
    return t_loc * d * s
  fine = plan.remat in ("fine", "offload")
  keep = 0.0
  drop = 0.0  # what fine-grained recomputation does not keep
  # attention
  keep += 3 * t_loc * d * s
  drop += 2 * t_loc * d * s  # norm outputs
  keep += t * ((m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim) * s)
  drop += t * (m.q_lora_rank + m.kv_lora_rank) * s  # the two low-rank norm outputs
  keep += t * h * (2 * qk + 2 * m.v_head_dim) * s
  if kernels == "fused":
    keep += t * h * 4
  else:
    keep += 2 * plan.mbs * h * plan.seq * plan.seq * 4
  if kind == "dense":
    f = m.dense_ffn_dim / tp
    keep += 2 * t_loc * d * s + t * 2 * f * s
    drop += 2 * t_loc * d * s + t * f * s
  else:
    k, f = m.top_k, m.expert_ffn_dim
    extend = plan.tp_extend_ep or tp == 1
    tl = t_loc if extend else t  # tokens entering this device's MoE layer
    rows = t_loc * k if extend else t * k / plan.ep  # (token, expert) rows its experts process
    f_loc = f if extend else f / tp
    keep += 2 * tl * d * s + tl * m.num_routed_experts * 4 + rows * (2 * f_loc + d) * s
    drop += 2 * tl * d * s + rows * (f_loc + d) * s  # norm outputs, swiglu output, permuted input
    if m.num_shared_experts:
      fs = m.num_shared_experts * f / (1 if extend else tp)
      keep += tl * 2 * fs * s
      drop += tl * fs * s
  total = keep + drop
  if fine:
    total = keep
  if plan.remat == "offload":
    total -= offloaded_bytes(m, plan, kind)
  return total


def offloaded_bytes(m, plan, kind: str) -> float:
  """Tensors swapped to host under remat='offload' (our choice): the routed experts' w_in outputs."""
  if kind != "moe":
    return 0.0
  tl = plan.mbs * plan.seq / (plan.tp if (plan.tp_extend_ep or plan.tp == 1) else 1)
  return tl * m.top_k * 2 * m.expert_ffn_dim * BYTES[plan.dtype]


def stage_layers(m, plan) -> list:
  """Layer kinds of each stage (pp stages, each the union of its vpp chunks; pangu_jax.sim.pipeline_placement)."""
  return stages_of(place(m, plan), plan.pp)


def memory_per_device(cfg_model, plan, hw, stages: list | None = None) -> dict:
  """Bytes per device of the most loaded stage, by category (GB); `stages` as stage_layers gives them."""
  m = cfg_model
  ps = param_split(m)
  kernels = hw.kernels
  s = BYTES[plan.dtype]
  per_stage = []
  stages = stages if stages is not None else stage_layers(m, plan)
  chunks = inflight_chunks(plan.pp, plan.microbatches, plan.vpp)
  for r, kinds in enumerate(stages):
    nonexp, exp = 0.0, 0.0
    act_layer = 0.0
    for kd in kinds:
      if kd == "dense":
        nonexp += ps["dense_layer"] / plan.tp
      elif kd in ("moe", "mtp"):
        nonexp += ps["moe_layer_nonexpert"] / plan.tp
        exp += ps["moe_layer_expert"] / (plan.ep * plan.tp)
      elif kd == "embed":
        nonexp += ps["embedding"] / plan.tp
      elif kd == "head":
        nonexp += ps["head"] / plan.tp
      if kd == "mtp":
        nonexp += (ps["mtp"] - ps["moe_layer_nonexpert"] - ps["moe_layer_expert"]) / plan.tp
      if kd in ("dense", "moe", "mtp"):
        act_layer += layer_activation_bytes(m, plan, "dense" if kd == "dense" else "moe", kernels)
    if kernels == "fused":
      weights = (nonexp + exp) * s
      grads = (nonexp + exp) * 4
      optim = nonexp * 12 / plan.dp + exp * 12 / plan.expert_dp
    else:
      weights = (nonexp + exp) * 4
      grads = (nonexp + exp) * 4
      optim = (nonexp + exp) * 8
    # stage r holds (inflight chunks) x (one chunk's activations); a chunk is 1/vpp of the stage's layers
    inflight = chunks if r == 0 else inflight_chunks(plan.pp - r, plan.microbatches, plan.vpp)
    acts = act_layer / plan.vpp * inflight
    t_loc = plan.mbs * plan.seq / plan.tp
    buffers = 2 * t_loc * m.top_k * m.hidden_size * s
    if kernels != "fused":
      buffers += (-(-plan.mbs * plan.seq * m.top_k // CPU_GMM_BLOCK) + m.num_routed_experts) * 3 * \
          m.hidden_size * m.expert_ffn_dim * 4
    if "head" in kinds:
      buffers += 2 * plan.mbs * plan.seq * m.vocab_size / plan.tp * 4
    per_stage.append({"weights": weights, "grads": grads, "optimizer": optim, "activations": acts,
                      "buffers": buffers, "reserved": hw.mem_reserved_gb * GB})
  totals = [sum(x.values()) for x in per_stage]
  worst = max(range(len(totals)), key=totals.__getitem__)
  out = {k: v / GB for k, v in per_stage[worst].items()}
  out["total"] = totals[worst] / GB
  out["stage"] = worst
  return out
