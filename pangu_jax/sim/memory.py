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
  """Bytes one layer saves for its backward for one micro-batch on one device, under plan.remat.

  `fine` drops (recomputes) the norm outputs, activation-function outputs and permuted rows; `selective`
  (DeepSeek-V3's recomputation) also the MLA up-projections' per-head q, k, v, recomputed from the stored
  latents; under plan.fp8 the inputs of FP8 linear layers are cached in FP8 (1 byte; DeepSeek-V3's
  low-precision storage). Norm outputs after attention and the FFN exist only with model.sandwich_norm."""
  from pangu_jax.sim.ops import expert_rows, expert_split, is_gqa, kv_heads_per_device, routed_tokens  # noqa: PLC0415

  s = BYTES[plan.dtype]
  a = 1 if plan.fp8 else s  # a cached input of a linear layer
  t = plan.mbs * plan.seq
  tp = plan.tp
  t_loc = t / tp
  d = m.hidden_size
  h = m.num_heads / tp
  norms = 1 + int(bool(m.sandwich_norm))  # norm outputs per sub-layer
  if plan.remat == "full":
    return t_loc * d * s
  keep = 0.0
  drop = 0.0  # what fine-grained recomputation does not keep
  sel = 0.0  # what selective recomputation also does not keep
  # attention
  keep += (1 + norms) * t_loc * d * s  # the layer input, the sub-layer output (+ the post-norm's input)
  drop += norms * t_loc * d * s
  if is_gqa(m):
    kv = kv_heads_per_device(m, tp)
    keep += t * (h + 2 * kv) * m.head_dim * s + t * h * m.head_dim * a  # q, k, v; the output projection's input
    qk, v = m.head_dim, m.head_dim
  else:
    qk, v = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    keep += t * ((m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim) * s)
    drop += t * (m.q_lora_rank + m.kv_lora_rank) * a  # the two low-rank norm outputs (the up-projections' inputs)
    keep += t * h * v * a  # the attention output (the output projection's input)
    sel += t * h * (2 * qk + v) * s  # per-head q, k, v of the up-projections
  if kernels == "fused":
    keep += t * h * 4
  else:
    keep += 2 * plan.mbs * h * plan.seq * plan.seq * 4
  if kind == "dense":
    f = m.dense_ffn_dim / tp
    keep += norms * t_loc * d * s + t * 2 * f * s
    drop += norms * t_loc * d * s + t * f * a
  else:
    k, f = m.top_k, m.expert_ffn_dim
    split = expert_split(plan)
    tl = routed_tokens(t, plan, kernels)  # tokens this device routes
    tn = t_loc if kernels == "fused" else tl  # tokens of its norms
    rows = expert_rows(t, k, plan)  # (token, expert) rows its experts process
    f_loc = f / tp if split else f
    # the SwiGLU inputs (w_in outputs) are cached like a linear layer's input: in FP8 under plan.fp8 (DeepSeek-V3)
    keep += norms * tn * d * s + tl * m.num_routed_experts * 4 + rows * (2 * f_loc * a + d * s)
    drop += norms * tn * d * s + rows * (f_loc + d) * a  # norm outputs, swiglu output, permuted input
    if m.num_shared_experts:
      fs = m.num_shared_experts * f / (tp if split else 1)
      ts = t if split else tl
      keep += ts * 2 * fs * a
      drop += ts * fs * a
  if plan.remat == "none":
    total = keep + drop + sel
  elif plan.remat == "selective":
    total = keep
  else:
    total = keep + sel
  if plan.remat == "offload":
    total -= offloaded_bytes(m, plan, kind)
  return total


def offloaded_bytes(m, plan, kind: str) -> float:
  """Tensors swapped to host under remat='offload' (our choice): the routed experts' w_in outputs."""
  if kind != "moe":
    return 0.0
  from pangu_jax.sim.ops import expert_rows, expert_split  # noqa: PLC0415

  f = m.expert_ffn_dim / (plan.tp if expert_split(plan) else 1)
  return expert_rows(plan.mbs * plan.seq, m.top_k, plan) * 2 * f * BYTES[plan.dtype]


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
    if kernels == "fused":  # ZeRO stage plan.zero over each weight's data-parallel replicas
      shard = lambda stage, n, e: n / plan.dp + e / plan.expert_dp if plan.zero >= stage else n + e  # noqa: E731
      weights = shard(3, nonexp, exp) * s
      grads = shard(2, nonexp, exp) * 4
      optim = shard(1, nonexp, exp) * 12
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
    if plan.zero == 3 and kinds:  # FSDP: the gathered weights of two layers (the current one, the prefetched one)
      buffers += 2 * (nonexp + exp) / len(kinds) * s
    per_stage.append({"weights": weights, "grads": grads, "optimizer": optim, "activations": acts,
                      "buffers": buffers, "reserved": hw.mem_reserved_gb * GB})
  totals = [sum(x.values()) for x in per_stage]
  worst = max(range(len(totals)), key=totals.__getitem__)
  out = {k: v / GB for k, v in per_stage[worst].items()}
  out["total"] = totals[worst] / GB
  out["stage"] = worst
  return out
