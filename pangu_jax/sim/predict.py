"""Step time, tokens/s, MFU and memory of (model config, plan, hardware).

Per layer kind: compute (ops.py forward, backward, recomputation under the remat policy) plus communication
(TP all-gather / reduce-scatter with sequence parallelism, EP dispatch/combine all-to-all); EP communication
is hidden under compute when `overlap` (at most the compute of the other micro-batch, times overlap_eff).
Chunks hold layers in order (pipeline_placement.py); the pipeline time is Megatron's schedule run with each chunk's own
forward and backward time (schedule.simulate; the slowest stage bounds it, the others set the ramp); then the
data-parallel gradient reduce-scatter and parameter all-gather (overlapped with the backward when `overlap`)
and the optimizer step. MFU = tokens/s x model FLOPs per token (pangu_jax.flops, MTP excluded, the reference's
accounting) / (devices x matmul peak of the plan's dtype).
"""

from __future__ import annotations

import functools

from confspec import ConfigError
from pangu_jax.flops import train_flops_per_token
from pangu_jax.sim import comm, ops
from pangu_jax.sim.memory import _key, layer_activation_bytes, memory_per_device, param_split
from pangu_jax.sim.pipeline_placement import place, stages_of
from pangu_jax.sim.schedule import pipeline_time, simulate

DEFAULT_BREAKDOWN = ("compute", "recompute", "tp_comm", "ep_comm_exposed", "fsdp_comm_exposed", "pp_comm", "bubble",
                     "dp_comm_exposed",
                     "optimizer", "overhead")


def _layer_ops(m, plan, kind, kernels):
  s = ops.BYTES[plan.dtype]
  b, sq, tp = plan.mbs, plan.seq, plan.tp
  if kind == "dense":
    return ops.attention_ops(m, b, sq, tp, s, kernels) + ops.dense_ffn_ops(m, b, sq, tp, s, kernels)
  if kind == "moe":
    return ops.attention_ops(m, b, sq, tp, s, kernels) + ops.moe_ops(m, b, sq, plan, s, kernels)
  if kind == "mtp":
    return (ops.mtp_extra_ops(m, b, sq, tp, s, kernels) + ops.attention_ops(m, b, sq, tp, s, kernels)
            + ops.moe_ops(m, b, sq, plan, s, kernels) + ops.head_ops(m, b, sq, tp, s, kernels))
  if kind == "embed":
    return ops.embed_ops(m, b, sq, s)
  if kind == "head":
    return ops.head_ops(m, b, sq, tp, s, kernels)
  raise ValueError(kind)


def tp_collectives(m, plan, kind, kernels) -> list:
  """Tensor-parallel collectives of one layer kind's forward for one micro-batch: [("ag" | "rs", bytes, how many
  of the same size its backward runs)]. Sequence parallelism throughout. xla_cpu (our trainer, what --validate
  measured): an all-gather + reduce-scatter of the hidden state around attention and around the dense FFN (and
  the MoE block without TP-extend-EP), mirrored in backward. fused (Megatron-Core): attention gathers only the
  MLA latents (q, kv inside the up-projections' column-parallel linears; the RoPE key explicitly); the MTP block
  reduce-scatters its own embedding, gathers its projection's 2d input, then the output along the hidden dim
  and splits it back over the sequence; the output head gathers its input; the vocab-parallel embedding
  reduce-scatters. Backward: a column-parallel linear reduce-scatters its input gradient and gathers its input
  again for the weight gradient (2); an explicit gather or a reduce-scatter is mirrored once (1); the MTP
  output's hidden-dim gather + sequence split mirror as one sequence all-gather (1)."""
  if plan.tp == 1:
    return []
  t, s = plan.mbs * plan.seq, ops.BYTES[plan.dtype]
  hid = t * m.hidden_size * s
  fused = kernels == "fused"
  gather_back = 2 if fused else 1
  out = []
  if kind in ("dense", "moe", "mtp"):
    width = ops.attention_gather_width(m, kernels)
    if fused and not ops.is_gqa(m):  # the RoPE key is gathered on its own, not inside a column-parallel linear
      out += [("ag", t * (width - m.qk_rope_head_dim) * s, 2), ("ag", t * m.qk_rope_head_dim * s, 1)]
    else:
      out += [("ag", t * width * s, gather_back)]
    out += [("rs", hid, 1)]
    if kind == "dense":
      out += [("ag", hid, gather_back), ("rs", hid, 1)]
    elif ops.expert_split(plan):
      if not fused or m.num_shared_experts > 0:  # our trainer's token gather; Megatron's TP shared experts
        out += [("ag", hid, gather_back), ("rs", hid, 1)]
      if fused:  # Megatron's ETP: the rows received by the all-to-all gathered over tp, the outputs scattered
        rows = ops.expert_rows(t, m.top_k, plan) * m.hidden_size * s
        out += [("ag", rows, gather_back), ("rs", rows, 1)]
  if not fused:
    return out
  if kind == "mtp":
    out += [("rs", hid, 1), ("ag", 2 * hid, 2), ("ag", hid, 1)]
  if kind in ("mtp", "head"):
    out += [("ag", hid, 2)]
  if kind == "embed":
    out += [("rs", hid, 1)]
  return out


def layer_cost(m, plan, hw, kind) -> dict:
  """Seconds of one layer for one micro-batch on one device: forward, backward, recompute, communication."""
  kernels = hw.kernels
  s = ops.BYTES[plan.dtype]
  op_list = _layer_ops(m, plan, kind, kernels)
  fwd, bwd, fine = ops.ops_times(op_list, hw, plan.dtype, fp8=plan.fp8, selective=plan.remat == "selective")
  if kernels == "xla_cpu" and kind in ("moe", "mtp"):
    # the CPU grouped matmul's backward writes one dW per block and segment-sums them
    bwd += 2 * ops.moe_gmm_weight_bytes(m, plan, 4) / ops.bandwidth(hw)
  if kind in ("dense", "moe", "mtp"):
    # saving activations for the backward (under lax.scan: stacked per layer) costs per byte (calibrated)
    bwd += layer_activation_bytes(m, plan, "dense" if kind == "dense" else "moe", kernels) * hw.residual_s_per_byte
  share = plan.devices if hw.host_shared_compute else 1  # simulated devices share the host's cores
  fwd, bwd, fine = fwd * share, bwd * share, fine * share
  t = plan.mbs * plan.seq
  across = plan.tp > hw.devices_per_node
  tp_fwd = tp_bwd = 0.0
  for op, nbytes, bwd_count in tp_collectives(m, plan, kind, kernels):
    one = (comm.all_gather if op == "ag" else comm.reduce_scatter)(hw, plan.tp, nbytes, across_nodes=across)
    tp_fwd += one
    tp_bwd += one * bwd_count
  ep_fwd = 0.0
  if kind in ("moe", "mtp") and plan.ep_eff > 1:
    t_loc = ops.routed_tokens(t, plan, kernels)
    sent = t_loc * plan.ep_eff if kernels == "xla_cpu" else t_loc  # the CPU exchange sends its whole buffer
    one = comm.ep_all_to_all(hw, plan.ep_eff, sent, m.top_k, m.hidden_size * s, plan.hier_a2a)
    ep_fwd = 2 * one  # dispatch + combine
  recompute = 0.0
  if plan.remat == "full":
    recompute = fwd * hw.recompute_ratio  # its communication is added to tp_total / ep_total below
  elif plan.remat in ("fine", "selective", "offload"):
    recompute = fine * hw.recompute_ratio
  swap = 0.0
  if plan.remat == "offload" and kind in ("moe", "mtp"):
    from pangu_jax.sim.memory import offloaded_bytes  # noqa: PLC0415
    swap = max(0.0, 2 * offloaded_bytes(m, plan, "moe") / hw.offload_bw - (fwd + bwd))
  compute = fwd + bwd + recompute
  recomputed = plan.remat == "full" and kind in ("dense", "moe", "mtp")  # full remat re-runs layers, not head
  tp_total = tp_fwd + tp_bwd + (tp_fwd if recomputed else 0.0)
  ep_total = 2 * ep_fwd + (ep_fwd if plan.remat == "full" else 0.0)
  ep_exposed = ep_total - (min(ep_total, compute) * hw.overlap_eff if plan.overlaps("ep") else 0.0)
  tp_exposed = tp_total - (min(tp_total, compute) * hw.overlap_eff if plan.overlaps("tp") else 0.0)
  fsdp = 0.0
  if plan.zero == 3 and plan.dp > 1 and kind in KINDS:
    # FSDP: the layer's weights gathered over their data-parallel group for the forward and again for the backward
    fsdp = 2 * _dp_gather_time(m, plan, hw, [kind], s)
    fsdp -= min(fsdp, compute) * hw.overlap_eff if plan.overlaps("dp") else 0.0
  return {"fwd": fwd, "bwd": bwd, "recompute": recompute + swap, "compute": compute + swap, "tp_comm": tp_exposed,
          "ep_comm": ep_total, "ep_comm_exposed": ep_exposed, "fsdp_comm_exposed": fsdp,
          "total": compute + swap + tp_exposed + ep_exposed + fsdp, "flops_fwd": ops.total_flops(op_list)}


KINDS = ("dense", "moe", "mtp", "embed", "head")


def stage_params(m, plan, kinds) -> tuple:
  """(non-expert, expert) parameters one device of a stage holding `kinds` keeps before data-parallel sharding:
  non-expert weights over tp, each routed expert over ep x tp devices."""
  ps = param_split(m)
  nonexp = sum(ps["dense_layer"] if k == "dense" else ps["moe_layer_nonexpert"] if k in ("moe", "mtp") else
               ps["embedding"] if k == "embed" else ps["head"] for k in kinds) / plan.tp
  exp = sum(ps["moe_layer_expert"] for k in kinds if k in ("moe", "mtp")) / (plan.ep * plan.tp)
  return nonexp, exp


def _dp_gather_time(m, plan, hw, kinds, s) -> float:
  """All-gather of the parameters of `kinds` over their data-parallel groups (dp; experts: dp / ep)."""
  nonexp, exp = stage_params(m, plan, kinds)
  across = plan.devices > hw.devices_per_node
  return comm.all_gather(hw, plan.dp, nonexp * s, across) + comm.all_gather(hw, plan.expert_dp, exp * s, across)


def pp_comm_time(m, plan, hw) -> float:
  """Pipeline p2p per micro-batch on one stage: vpp chunk boundaries, forward and backward, of the
  sequence-parallel shard; hidden to the overlap share when `overlap`."""
  if plan.pp == 1:
    return 0.0
  act = plan.mbs * plan.seq / plan.tp * m.hidden_size * ops.BYTES[plan.dtype]
  t = 2 * plan.vpp * comm.p2p(hw, act, across_nodes=plan.tp * plan.dp * plan.pp > hw.devices_per_node)
  return t * (1 - hw.overlap_eff) if plan.overlaps("pp") else t


def predict(cfg, hw, plan, *, with_ops: bool = False) -> dict:
  m = cfg.model
  if plan.fp8 and hw.fp8_peak <= 0:
    raise ConfigError(f"plan.fp8: hardware {hw.name!r} has no FP8 peak (hardware.fp8_peak = 0)")
  s = ops.BYTES[plan.dtype]
  kinds = KINDS
  costs = {k: layer_cost(m, plan, hw, k) for k in kinds}
  chunk_kinds = place(m, plan)
  stages = stages_of(chunk_kinds, plan.pp)
  stage_tot = []
  for ks in stages:
    stage_tot.append({f: sum(costs[k][f] for k in ks) for f in ("total", "compute", "recompute", "tp_comm",
                                                               "ep_comm_exposed", "fsdp_comm_exposed", "fwd",
                                                               "bwd")})
  worst = max(range(len(stage_tot)), key=lambda i: stage_tot[i]["total"])
  st = stage_tot[worst]
  pp_comm = pp_comm_time(m, plan, hw)
  per_mb = st["total"] + pp_comm
  mbatches = plan.microbatches
  tf, tb = chunk_time_tables(plan, chunk_kinds, costs, pp_comm)
  pipe = pipeline_step_time(plan, mbatches, tf, tb)
  bubble = pipe - mbatches * per_mb
  # data-parallel gradient reduce-scatter + parameter all-gather (distributed optimiser; zero 3: the gathers are
  # per layer in layer_cost)
  nonexp, exp = stage_params(m, plan, stages[worst])
  across = plan.devices > hw.devices_per_node
  dp_comm = (comm.reduce_scatter(hw, plan.dp, nonexp * s, across)
             + comm.reduce_scatter(hw, plan.expert_dp, exp * s, across))
  if plan.zero < 3:
    dp_comm += _dp_gather_time(m, plan, hw, stages[worst], s)
  dp_exposed = dp_comm * ((1 - hw.overlap_eff) if plan.overlaps("dp") else 1.0)
  bw = ops.bandwidth(hw)
  if hw.kernels == "fused":
    shard = plan.zero >= 1  # the distributed optimiser updates only this replica's shard
    opt = (nonexp / (plan.dp if shard else 1) + exp / (plan.expert_dp if shard else 1)) * 30 / bw
  else:
    opt = (nonexp + exp) * 44 / bw + 2 * (nonexp + exp) * 4 / bw  # fused AdamW + keep-if-finite, grad norm
  if hw.host_shared_compute:
    opt *= plan.devices
  step = pipe + dp_exposed + opt + hw.step_overhead_s
  tokens = plan.gbs * plan.seq
  tps = tokens / step
  flops_tok = _model_flops(_key(m), plan.seq)
  peak = hw.matmul_peak[plan.dtype]
  mfu = tps * flops_tok / (plan.devices * peak)
  mem = memory_per_device(m, plan, hw, stages)
  fits = mem["total"] <= hw.memory_gb
  breakdown = {
      "compute": mbatches * (st["compute"] - st["recompute"]), "recompute": mbatches * st["recompute"],
      "tp_comm": mbatches * st["tp_comm"], "ep_comm_exposed": mbatches * st["ep_comm_exposed"],
      "fsdp_comm_exposed": mbatches * st["fsdp_comm_exposed"],
      "pp_comm": mbatches * pp_comm, "bubble": bubble, "dp_comm_exposed": dp_exposed, "optimizer": opt,
      "overhead": hw.step_overhead_s}
  out = {"mfu": mfu, "tokens_per_s": tps, "step_time_s": step, "memory_per_device_gb": mem["total"], "fits": fits,
         "plan": plan.as_dict(), "hardware": hw.name, "microbatches": mbatches,
         "bubble_fraction": bubble / pipe if plan.pp > 1 else 0.0,  # the slowest stage's idle share
         "breakdown_s": breakdown, "memory_gb": mem, "stage_time_per_microbatch_s": per_mb,
         "bottleneck_stage": worst, "model_flops_per_token": flops_tok,
         "stage_times_per_microbatch_s": [x["total"] + pp_comm for x in stage_tot], "pipeline_time_s": pipe,
         "chunk_times_s": {"fwd": tf, "bwd": tb},
         "layers_per_chunk": [sum(k in ("dense", "moe", "mtp") for k in ck) for ck in chunk_kinds],
         "layer_times_s": {k: {f: v[f] for f in ("fwd", "bwd", "recompute", "tp_comm", "ep_comm", "ep_comm_exposed",
                                                 "total")} for k, v in costs.items()}}
  if with_ops:
    out["ops"] = {k: [(o.name, ops.op_time(o, hw, plan.dtype)) for o in _layer_ops(m, plan, k, hw.kernels)]
                  for k in kinds}
  return out


def chunk_time_tables(plan, chunk_kinds, costs, pp_comm) -> tuple:
  """p x v tables of one micro-batch's forward and backward time per chunk (chunk c is stage c % p's chunk
  c // p): its layers' totals split by their forward compute's share of their compute; the p2p time split
  evenly over the chunk boundaries."""
  p, v = plan.pp, plan.vpp
  tf = [[pp_comm / (2 * v)] * v for _ in range(p)]
  tb = [[pp_comm / (2 * v)] * v for _ in range(p)]
  for c, ck in enumerate(chunk_kinds):
    for k in ck:
      total, compute = costs[k]["total"], costs[k]["compute"]
      fwd = total * costs[k]["fwd"] / compute if compute > 0 else 0.5 * total
      tf[c % p][c // p] += fwd
      tb[c % p][c // p] += total - fwd
  return tf, tb


def slowest_stage_time(tf, tb) -> float:
  """One micro-batch's time on the busiest stage (all its chunks, forward and backward)."""
  return max(sum(f) + sum(b) for f, b in zip(tf, tb))


def pipeline_step_time(plan, mbatches, tf, tb) -> float:
  """Pipeline time of one step. The event simulation with each chunk's own times, so the warm-up and cool-down
  run at each stage's own pace while the slowest stage still does all m micro-batches (with equal stages it
  equals the closed form, tests). One stage, or interleaving with m not a multiple of pp (outside Megatron's
  rule): the closed form on the slowest stage."""
  p, v = plan.pp, plan.vpp
  if p == 1 or (v > 1 and mbatches % p):
    per_mb = slowest_stage_time(tf, tb)
    return pipeline_time(p, mbatches, v, per_mb * 0.5, per_mb * 0.5)
  return simulate(p, mbatches, v, tf, tb)["time"]


@functools.lru_cache(maxsize=1024)
def _model_flops(key: str, seq: int) -> float:
  import json  # noqa: PLC0415

  import ml_collections  # noqa: PLC0415

  return train_flops_per_token(ml_collections.ConfigDict(json.loads(key)), seq, include_mtp=False)
