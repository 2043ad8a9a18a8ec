"""Tests of the performance simulator (pangu_jax/sim): closed forms, schedule simulation against its formulas,
monotonicity, memory against parameter counts, the CLI's JSON, hardware-file round trips."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from confspec import ConfigError
from pangu_jax.config import base_config
from pangu_jax.params import count_params
from pangu_jax.sim import ops, schedule
from pangu_jax.sim.hardware import hardware_config, load_hardware, log_interp_rate, write_hardware_file
from pangu_jax.sim.memory import memory_per_device
from pangu_jax.sim.plan import make_plan, parse_plan_string
from pangu_jax.sim.predict import predict
from pangu_jax.sim.validate import steady_step_time

PAPER_PLAN = "tp=8,pp=16,vpp=2,ep=4,mbs=2,seq=4096,devices=6144"


def _hw(**kw):
  base = dict(name="t", matmul_peak={"bfloat16": 100e12, "float32": 50e12}, vector_peak={"bfloat16": 10e12,
              "float32": 5e12}, gemm_eff_max=0.5, gemm_half_dim=0.0, attn_eff=0.4, memory_gb=80.0, mem_bw=2e12,
              mem_bw_eff=0.5, mem_reserved_gb=1.0, devices_per_node=8, intra_bw=400e9, intra_latency_s=1e-5,
              inter_bw=50e9, inter_latency_s=2e-5, comm_eff=0.8, offload_bw=30e9, op_overhead_s=3e-6)
  base.update(kw)
  return hardware_config(**base)


def _paper_cfg():
  import importlib.util  # noqa: PLC0415

  spec = importlib.util.spec_from_file_location("paper_cfg", os.path.join(REPO, "configs/pangu/ultra_moe_718b.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def _paper(cfg, hw, extra=""):
  return predict(cfg, hw, make_plan(cfg, parse_plan_string(PAPER_PLAN + extra)))


def test_single_gemm_time_is_flops_over_peak_times_eff():
  hw = _hw()
  m, k, n = 4096, 8192, 2048
  op = ops.gemm("g", m, k, n, s=2)
  expect = 2 * m * k * n / (100e12 * 0.5) + 3e-6
  assert ops.op_time(op, hw, "bfloat16") == pytest.approx(expect, rel=1e-9)
  # a GEMM too thin to be compute-bound takes its memory traffic time instead
  thin = ops.gemm("t", 1 << 20, 8, 8, s=2)
  assert ops.op_time(thin, hw, "bfloat16") == pytest.approx(thin.bytes / (2e12 * 0.5) + 3e-6, rel=1e-9)


@pytest.mark.parametrize("p,m", [(2, 3), (4, 8), (8, 8), (5, 17)])
def test_1f1b_bubble_matches_closed_form(p, m):
  tf, tb = 1.0, 2.0
  res = schedule.simulate(p, m, 1, tf, tb)
  busy = sum(e[5] - e[4] for e in res["events"] if e[0] == 0)
  assert busy == pytest.approx(m * (tf + tb))
  assert 1 - busy / res["time"] == pytest.approx((p - 1) / (m + p - 1))
  assert res["time"] == pytest.approx(schedule.pipeline_time(p, m, 1, tf, tb))


@pytest.mark.parametrize("p,m,v", [(4, 8, 2), (4, 8, 4), (8, 16, 2)])
def test_interleaving_divides_the_ramp_by_vpp(p, m, v):
  tf, tb = 1.0, 2.0
  plain = schedule.simulate(p, m, 1, tf, tb)["time"] - m * (tf + tb)
  inter = schedule.simulate(p, m, v, tf, tb)["time"] - m * (tf + tb)
  assert inter == pytest.approx(plain / v)
  assert schedule.bubble_fraction(p, m, v) == pytest.approx(inter / (inter + m * (tf + tb)))


def test_every_task_respects_its_dependency():
  res = schedule.simulate(4, 8, 2, 1.0, 2.0)
  end = {(k, mb, c, s): e for s, k, mb, c, _, e in res["events"]}
  for s, k, mb, c, start, _ in res["events"]:
    if k == "F" and s > 0:
      assert start >= end[("F", mb, c, s - 1)] - 1e-12
    if k == "B" and s < 3:
      assert start >= end[("B", mb, c, s + 1)] - 1e-12
  per_stage = {}
  for s, _, _, _, a, b in sorted(res["events"], key=lambda e: (e[0], e[4])):
    assert a >= per_stage.get(s, 0.0) - 1e-12  # one task at a time per stage
    per_stage[s] = b


def test_unequal_stages_match_two_stage_closed_forms():
  """Two stages, 1F1B, derived by hand: a slow last stage is never starved after the first forward, so the step
  is f0 + m (f1 + b1) + b0; a slow first stage (f0, b0 >= f1 + b1) never waits, so it is m (f0 + b0)."""
  m = 5
  slow_last = schedule.simulate(2, m, 1, [[1.0], [3.0]], [[2.0], [5.0]])["time"]
  assert slow_last == pytest.approx(1.0 + m * (3.0 + 5.0) + 2.0)
  slow_first = schedule.simulate(2, m, 1, [[4.0], [1.0]], [[5.0], [1.0]])["time"]
  assert slow_first == pytest.approx(m * (4.0 + 5.0))


@pytest.mark.parametrize("seed", range(4))
def test_per_chunk_times_respect_bounds_and_monotonicity(seed):
  import random  # noqa: PLC0415

  rng = random.Random(seed)
  p, v, m = 4, 2, 8
  tf = [[rng.uniform(0.5, 2.0) for _ in range(v)] for _ in range(p)]
  tb = [[2 * x * rng.uniform(0.8, 1.2) for x in row] for row in tf]
  t = schedule.simulate(p, m, v, tf, tb)["time"]
  busiest = max(sum(tf[r]) + sum(tb[r]) for r in range(p))
  one_microbatch = sum(map(sum, tf)) + sum(map(sum, tb))  # forward through every chunk, then back
  assert t >= m * busiest - 1e-9 and t >= one_microbatch - 1e-9
  every_chunk_at_max = schedule.pipeline_time(p, m, v, v * max(map(max, tf)), v * max(map(max, tb)))
  assert t <= every_chunk_at_max + 1e-9
  r, c = rng.randrange(p), rng.randrange(v)
  slower = [row[:] for row in tb]
  slower[r][c] += 1.0
  assert schedule.simulate(p, m, v, tf, slower)["time"] >= t - 1e-12
  # a uniform table is the scalar path
  assert schedule.simulate(p, m, v, [[0.5] * v] * p, [[1.0] * v] * p)["time"] == pytest.approx(
      schedule.simulate(p, m, v, 0.5 * v, 1.0 * v)["time"])


def test_sequence_parallel_layers_compute_nothing_twice():
  """Fused kernels (sequence parallelism, Megatron-Core's MLA, TP-extend-EP): the tp devices of a layer together
  do exactly one device's work, op by op (FLOPs; bytes of the non-GEMM ops but the MTP block's embedding lookup), for
  attention, the dense FFN, the MoE block and the MTP block's extra ops, except the shared RoPE key, which every
  device rotates for all tokens. The xla_cpu set (our trainer's layout) repeats the norms and down-projections
  on every device."""
  from pangu_jax.sim.plan import Plan  # noqa: PLC0415

  m = _paper_cfg().model
  b, sq, tp = 2, 4096, 8

  def per_op(t, kernels):
    plan = Plan(tp=t, ep=4, dp=8, mbs=b, seq=sq, tp_extend_ep=True)
    layer = (ops.attention_ops(m, b, sq, t, 2, kernels) + ops.dense_ffn_ops(m, b, sq, t, 2, kernels)
             + ops.moe_ops(m, b, sq, plan, 2, kernels) + ops.mtp_extra_ops(m, b, sq, t, 2, kernels))
    return {o.name: (o.flops, o.bytes, o.cls) for o in layer}
  one, split = per_op(1, "fused"), per_op(tp, "fused")
  assert set(one) == set(split)
  for name in one:
    if name == "rope":
      continue
    assert tp * split[name][0] == pytest.approx(one[name][0]), name
    if name != "mtp_embed" and one[name][2] != "gemm":  # a GEMM's bytes include its (replicated) weights
      assert tp * split[name][1] == pytest.approx(one[name][1]), name
  # the RoPE key: tp - 1 extra copies of b * sq tokens x qk_rope_head_dim elements, 4 FLOPs each
  assert tp * split["rope"][0] - one["rope"][0] == pytest.approx(4 * b * sq * (tp - 1) * m.qk_rope_head_dim)
  cpu_one, cpu_split = per_op(1, "xla_cpu"), per_op(tp, "xla_cpu")
  assert cpu_split["q_a"] == cpu_one["q_a"]  # every device projects all tokens


def test_every_padding_placement_is_listed_once():
  from pangu_jax.sim import pipeline_placement  # noqa: PLC0415

  all_ = [tuple(c) for c in pipeline_placement.pad_placements(62, 32)]
  assert len(all_) == len(set(all_)) == 33 * 32 // 2  # 2 no-op slots in 32 chunks: C(32 + 1, 2)
  assert all(sum(c) == 62 and max(c) <= 2 for c in all_)
  # ours: as even as possible, the extra layers first: the paper's two no-op slots land in chunks 30 and 31
  assert tuple(pipeline_placement.default_counts(62, 32)) == (2,) * 30 + (1, 1)
  assert tuple(pipeline_placement.default_counts(67, 32)) == (3,) * 3 + (2,) * 29  # 66 layers + MTP: no empty chunk
  assert pipeline_placement.default_counts(62, 1) == [62]


def test_paper_pipeline_tables_follow_the_placement_and_bounds():
  """Each chunk's row in predict's time tables is the total of the layers pipeline_placement.place puts in that chunk
  (chunk c = stage c % p, local chunk c // p) plus its p2p share; the step respects m t_max from below and the
  every-chunk-at-its-maximum schedule from above."""
  from pangu_jax.sim import pipeline_placement  # noqa: PLC0415

  cfg = _paper_cfg()
  hw = load_hardware("ascend_a2")
  plan = make_plan(cfg, parse_plan_string(PAPER_PLAN))
  r = predict(cfg, hw, plan)
  p, v, m = plan.pp, plan.vpp, r["microbatches"]
  tf, tb = r["chunk_times_s"]["fwd"], r["chunk_times_s"]["bwd"]
  chunks = pipeline_placement.place(cfg.model, plan)
  share = (r["stage_time_per_microbatch_s"] - max(sum(r["layer_times_s"][k]["total"] for k in st)
                                                  for st in pipeline_placement.stages_of(chunks, p)))
  for c, kinds in enumerate(chunks):
    expect = sum(r["layer_times_s"][k]["total"] for k in kinds) + share / v
    assert tf[c % p][c // p] + tb[c % p][c // p] == pytest.approx(expect), c
  t_max = r["stage_time_per_microbatch_s"]
  assert m * t_max <= r["pipeline_time_s"] <= schedule.pipeline_time(p, m, v, v * max(map(max, tf)),
                                                                    v * max(map(max, tb)))


def test_events_take_their_chunks_time_in_virtual_stage_order():
  p, v, m = 3, 2, 3
  tf = [[1.0 + r + 10 * c for c in range(v)] for r in range(p)]  # every (stage, chunk) a different time
  tb = [[2 * x + 0.5 for x in row] for row in tf]
  events = schedule.simulate(p, m, v, tf, tb)["events"]
  for stage, kind, _, chunk, start, end in events:
    assert end - start == pytest.approx((tf if kind == "F" else tb)[stage][chunk])
  first = sorted((e for e in events if e[1] == "F" and e[2] == 0), key=lambda e: e[4])
  assert [(e[0], e[3]) for e in first] == [(r, c) for c in range(v) for r in range(p)]  # virtual stage c p + r
  assert all(b[4] >= a[5] - 1e-12 for a, b in zip(first, first[1:]))


def test_gemm_flops_match_the_model_parameters_and_split_over_tp():
  """Independent of the op lists: a token's GEMM FLOPs in a layer are 2 x the layer's matmul parameters (from
  the model's own parameter tree); under the fused kernels' sequence parallelism the tp devices split them
  exactly (none repeated), for attention, the dense FFN and the MTP projection."""
  import jax  # noqa: PLC0415

  from pangu_jax.params import abstract_params  # noqa: PLC0415

  m = _paper_cfg().model
  params = abstract_params(m)
  b, sq = 1, 256
  t = b * sq

  def matmul_params(tree):
    return sum(a.shape[-1] * a.shape[-2] for a in jax.tree.leaves(tree) if a.ndim >= 3)  # stacked 2-D weights

  def gemm_flops(op_list):
    return sum(o.flops for o in op_list if o.cls == "gemm")

  attn_dense = matmul_params(params["dense_layers"]["attn"]) + matmul_params(params["dense_layers"]["mlp"])
  mtp_proj = matmul_params(params["mtp"]["proj"])
  for tp in (1, 8):
    layer = ops.attention_ops(m, b, sq, tp, 2, "fused") + ops.dense_ffn_ops(m, b, sq, tp, 2, "fused")
    assert tp * gemm_flops(layer) == pytest.approx(2 * t * attn_dense, rel=1e-12)
    assert tp * gemm_flops(ops.mtp_extra_ops(m, b, sq, tp, 2, "fused")) == pytest.approx(2 * t * mtp_proj, rel=1e-12)


def _layer_matmul_params(params, top_k, num_experts):
  """Matmul parameters one token passes through in one layer, from the model's parameter tree (stacked over
  layers on axis 0): every 2-D weight, the routed experts at top_k / num_experts (norms and the router bias are
  not matmuls)."""
  import jax  # noqa: PLC0415

  def size(tree):
    return sum(math.prod(a.shape[-2:]) * math.prod(a.shape[1:-2]) for a in jax.tree.leaves(tree)
               if a.ndim >= 3)

  total = size(params["attn"]) + size(params.get("mlp", {}))
  if "moe" in params:
    moe = params["moe"]
    total += size(moe["router"]) + size(moe.get("shared", {})) + size(moe["experts"]) * top_k / num_experts
  return total


def test_flops_are_conserved_over_every_tp_ep_combination():
  """Issue 28's conservation law: for every tp / ep / TP-extend-EP combination, the GEMM FLOPs of one
  micro-batch summed over a stage's dp x tp devices equal 2 x the layer's matmul parameters per token (from the
  model's parameter tree) x the stage's dp x T tokens, for the dense layer and the MoE layer (fused kernels:
  what published runs use), for the paper's MLA model and a GQA model (Qwen3-30B-A3B, tp up to its 4 KV heads:
  beyond, Megatron replicates them). Before the fix, split experts (TP-extend-EP off, tp > 1, ep > 1) summed to
  1/ep."""
  from pangu_jax.params import abstract_params  # noqa: PLC0415
  from pangu_jax.sim.plan import Plan  # noqa: PLC0415
  from runkit.configfile import load_config_file  # noqa: PLC0415

  checked = 0
  for m, tps in ((_paper_cfg().model, (1, 2, 4, 8)),
                 (load_config_file(os.path.join(REPO, "configs/published/qwen3_30b_a3b.py")).model, (1, 2, 4))):
    checked += _check_conservation(m, tps, abstract_params(m), Plan)
  assert checked >= 2 * 40 + 30


def _check_conservation(m, tps, params, plan_cls):
  b, sq, dp = 1, 4096, 32
  t = b * sq
  kinds = [k for k in ("dense", "moe") if f"{k}_layers" in params]
  per_token = {kind: _layer_matmul_params(params[f"{kind}_layers"], m.top_k, m.num_routed_experts) for kind in kinds}
  checked = 0
  Plan = plan_cls  # noqa: N806
  for tp in tps:
    for ep in (1, 2, 4, 8, 16, 32):
      for extend in (False, True):
        plan = Plan(tp=tp, ep=ep, dp=dp, mbs=b, seq=sq, devices=tp * dp, tp_extend_ep=extend)
        if (dp * tp) % plan.ep_eff or m.num_routed_experts % plan.ep_eff:
          continue
        for kind, op_list in (("dense", ops.attention_ops(m, b, sq, tp, 2, "fused")
                               + ops.dense_ffn_ops(m, b, sq, tp, 2, "fused")),
                              ("moe", ops.attention_ops(m, b, sq, tp, 2, "fused")
                               + ops.moe_ops(m, b, sq, plan, 2, "fused"))):
          if kind not in per_token:
            continue
          stage = dp * tp * sum(o.flops for o in op_list if o.cls == "gemm")
          assert stage == pytest.approx(2 * per_token[kind] * dp * t, rel=1e-9), (kind, tp, ep, extend)
          checked += 1
  return checked


@pytest.mark.parametrize("sandwich", [True, False])
def test_sublayer_norms_follow_the_parameter_tree(sandwich):
  """The layer-level norms the simulator charges are the ones the model has (its parameter tree): pre-norm
  only without sandwich_norm, pre- and post-norm with it; for the dense and the MoE layer."""
  from pangu_jax.params import abstract_params  # noqa: PLC0415
  from pangu_jax.sim.plan import Plan  # noqa: PLC0415

  m = base_config().model
  m.sandwich_norm = sandwich
  params = abstract_params(m)
  plan = Plan(tp=1, ep=1, dp=1, mbs=1, seq=64)
  names = {"attn_norm", "post_attn_norm", "mlp_norm", "post_mlp_norm"}
  for kind, op_list in (("dense", ops.attention_ops(m, 1, 64, 1, 4, "fused") + ops.dense_ffn_ops(m, 1, 64, 1, 4,
                                                                                                   "fused")),
                        ("moe", ops.attention_ops(m, 1, 64, 1, 4, "fused") + ops.moe_ops(m, 1, 64, plan, 4, "fused"))):
    charged = sorted(o.name for o in op_list if o.name in names)
    assert charged == sorted(k for k in params[f"{kind}_layers"] if k.endswith("norm")), kind
    assert len(charged) == (4 if sandwich else 2)


def test_plan_keys_of_issue_28_are_validated_and_switch_what_they_say():
  cfg = _paper_cfg()
  hw = load_hardware("h100")
  base = predict(cfg, hw, make_plan(cfg, parse_plan_string(PAPER_PLAN)))
  with pytest.raises(ConfigError, match=r"plan\.zero: 4 is out of range"):
    make_plan(cfg, parse_plan_string(PAPER_PLAN + ",zero=4"))
  with pytest.raises(ConfigError, match=r"plan\.fp8: .* no FP8 peak"):
    predict(cfg, load_hardware("ascend_a2"), make_plan(cfg, parse_plan_string(PAPER_PLAN + ",fp8=1")))
  fp8 = predict(cfg, hw, make_plan(cfg, parse_plan_string(PAPER_PLAN + ",fp8=1")))
  assert fp8["breakdown_s"]["compute"] < base["breakdown_s"]["compute"]
  assert fp8["memory_per_device_gb"] < base["memory_per_device_gb"]  # FP8-cached linear inputs
  # the ZeRO stages: each shards one more state, so memory falls and nothing else changes below stage 3
  mems = [predict(cfg, hw, make_plan(cfg, parse_plan_string(PAPER_PLAN + f",zero={z}")))["memory_gb"]
          for z in range(4)]
  assert mems[0]["optimizer"] > mems[1]["optimizer"] and mems[1]["grads"] > mems[2]["grads"]
  assert mems[2]["weights"] > mems[3]["weights"]
  # each overlap switch alone moves only its own communication
  for kind, key in (("ep", "ep_comm_exposed"), ("dp", "dp_comm_exposed"), ("pp", "pp_comm")):
    off = predict(cfg, hw, make_plan(cfg, parse_plan_string(PAPER_PLAN + f",overlap_{kind}=0")))
    assert off["breakdown_s"][key] > base["breakdown_s"][key], kind
    assert off["breakdown_s"]["compute"] == pytest.approx(base["breakdown_s"]["compute"])
  on = predict(cfg, hw, make_plan(cfg, parse_plan_string(PAPER_PLAN + ",overlap_tp=1")))
  assert on["breakdown_s"]["tp_comm"] < base["breakdown_s"]["tp_comm"]
  # selective recomputation: less memory than fine, more recompute time (the MLA up-projections)
  sel = predict(cfg, hw, make_plan(cfg, parse_plan_string(PAPER_PLAN + ",remat=selective")))
  assert sel["memory_per_device_gb"] < base["memory_per_device_gb"]
  assert sel["breakdown_s"]["recompute"] > base["breakdown_s"]["recompute"]


@pytest.mark.parametrize("field", ["inter_bw", "intra_bw", "mem_bw", "offload_bw"])
def test_more_bandwidth_is_never_slower(field):
  cfg = _paper_cfg()
  base = load_hardware("ascend_a2")
  fast = base.to_dict()
  fast[field] *= 2
  fast["collective_table"] = json.loads(fast["collective_table"])
  fast["gemm_table"] = json.loads(fast["gemm_table"])
  fast_hw = hardware_config(**fast)
  for extra in ("", ",hier_a2a=0", ",overlap=0", ",remat=offload"):
    assert _paper(cfg, fast_hw, extra)["step_time_s"] <= _paper(cfg, base, extra)["step_time_s"] + 1e-12


def test_paper_ablations_lower_the_prediction():
  cfg = _paper_cfg()
  hw = load_hardware("ascend_a2")
  base = _paper(cfg, hw)
  assert 0 < base["mfu"] < 1
  for extra in (",hier_a2a=0", ",overlap=0", ",remat=full"):
    assert _paper(cfg, hw, extra)["tokens_per_s"] < base["tokens_per_s"], extra
  none = _paper(cfg, hw, ",remat=none")
  assert none["memory_gb"]["activations"] > base["memory_gb"]["activations"]


def test_residual_charge_is_saved_bytes_times_rate_and_recompute_scales():
  """The XLA:CPU residual term adds exactly (bytes every layer saves, memory model) x rate per micro-batch; the
  recompute ratio scales the recomputation linearly."""
  from pangu_jax.sim.memory import layer_activation_bytes  # noqa: PLC0415

  cfg = base_config()
  m = cfg.model
  plan = make_plan(cfg, dict(mbs=4, gbs=8, seq=64, dtype="float32"))
  hw0 = _hw(kernels="xla_cpu")
  rate = 3e-10
  t0 = predict(cfg, hw0, plan)["step_time_s"]
  t1 = predict(cfg, _hw(kernels="xla_cpu", residual_s_per_byte=rate), plan)["step_time_s"]
  saved = (m.num_dense_layers * layer_activation_bytes(m, plan, "dense", "xla_cpu")
           + (m.num_layers - m.num_dense_layers + m.mtp_depth) * layer_activation_bytes(m, plan, "moe", "xla_cpu"))
  assert t1 - t0 == pytest.approx(plan.microbatches * saved * rate, rel=1e-9)
  full = make_plan(cfg, dict(mbs=4, gbs=8, seq=64, dtype="float32", remat="full"))
  r1 = predict(cfg, hw0, full)["breakdown_s"]["recompute"]
  r_half = predict(cfg, _hw(kernels="xla_cpu", recompute_ratio=0.5), full)["breakdown_s"]["recompute"]
  assert r1 > 0 and r_half == pytest.approx(0.5 * r1, rel=1e-9)
  with pytest.raises(ConfigError, match="recompute_ratio"):
    _hw(recompute_ratio=0.0)


def test_unsharded_memory_equals_parameter_count():
  m = base_config().model
  cfg = base_config()
  hw = _hw()
  c = count_params(m)
  n = c["total_params"] + c["mtp_params"]
  plan = make_plan(cfg, dict(mbs=1, gbs=1, seq=16, dtype="bfloat16"))
  mem = memory_per_device(m, plan, hw)
  assert mem["weights"] * 1e9 == pytest.approx(n * 2, rel=1e-6)
  assert mem["grads"] * 1e9 == pytest.approx(n * 4, rel=1e-6)
  assert mem["optimizer"] * 1e9 == pytest.approx(n * 12, rel=1e-6)


def test_expert_parallelism_shards_exactly_the_routed_experts():
  cfg = base_config()
  cfg.parallel.update(data=8)
  m = cfg.model
  hw = _hw()
  routed = count_params(m)["breakdown"]["routed_experts"]
  moe_layers = m.num_layers - m.num_dense_layers + m.mtp_depth
  per_layer = routed / (m.num_layers - m.num_dense_layers)
  one = memory_per_device(m, make_plan(cfg, dict(dp=8, ep=1, gbs=8, seq=16, dtype="bfloat16")), hw)["weights"]
  eight = memory_per_device(m, make_plan(cfg, dict(dp=8, ep=8, gbs=8, seq=16, dtype="bfloat16")), hw)["weights"]
  assert (one - eight) * 1e9 == pytest.approx(per_layer * moe_layers * (1 - 1 / 8) * 2, rel=1e-6)


def test_log_interp_rate_hits_grid_points_and_stays_between():
  table = [[m, k, n, float(m + k + n)] for m in (16, 256) for k in (16, 256) for n in (16, 256)]
  assert log_interp_rate(table, 16, 256, 16) == pytest.approx(288.0)
  mid = log_interp_rate(table, 64, 16, 16)
  assert 48.0 < mid < 288.0
  assert log_interp_rate(table, 1e6, 16, 16) == pytest.approx(288.0)  # flat beyond the grid


def test_hardware_file_round_trip(tmp_path):
  hw = _hw(gemm_table=[[16, 16, 16, 1e9], [64, 64, 64, 5e9]], collective_table={"all_to_all": [1e-4, 2e8]},
           host_shared_compute=True, kernels="xla_cpu", probe_s=0.01)
  path = str(tmp_path / "hw.py")
  write_hardware_file(hw, path, {"mem_bw": "measured"}, "test")
  back = load_hardware(path)
  a, b = hw.to_dict(), back.to_dict()
  assert set(a) == set(b)
  for k in a:
    if isinstance(a[k], float):
      assert b[k] == pytest.approx(a[k], rel=1e-5), k
    elif k in ("gemm_table", "collective_table"):
      va, vb = json.loads(a[k]), json.loads(b[k])
      pairs = zip(va, vb) if k == "gemm_table" else ((va[x], vb[x]) for x in va)
      assert len(va) == len(vb)
      for ra, rb in pairs:
        assert rb == pytest.approx(ra, rel=1e-5), k
    else:
      assert b[k] == a[k], k


@pytest.mark.parametrize("name", ["ascend_a2", "h100", "h200", "h800", "gb200"])
def test_public_hardware_files_cite_every_number(name):
  load_hardware(name)
  text = open(os.path.join(REPO, "configs", "hardware", f"{name}.py")).read()
  body = text[text.index("hardware_config("):].splitlines()[1:]
  prev = ""
  for line in body:
    if re.match(r"\s+\w+=", line) and not re.match(r"\s+(name|source)=", line):
      assert "#" in line or prev.strip().startswith("#"), f"{name}: no source for {line.strip()}"
    prev = line


def test_plan_errors_name_the_field():
  cfg = _paper_cfg()
  with pytest.raises(ConfigError, match="plan.tp"):
    make_plan(cfg, parse_plan_string("tp=3,pp=16,ep=1,tp_extend_ep=0,devices=6144"))
  with pytest.raises(ConfigError, match="plan.bogus"):
    parse_plan_string("bogus=1")


def test_steady_step_time_skips_warmup():
  lines = [{"step": 0}, {"tokens_per_s": 10.0}, {"tokens_per_s": 100.0}, {"tokens_per_s": 50.0},
           {"tokens_per_s": 100.0}]
  assert steady_step_time(lines, 100) == pytest.approx(1.0)


def _cli(*args):
  proc = subprocess.run([sys.executable, "-m", "pangu_jax.simulate", *args], capture_output=True, text=True,
                        cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_plan_json_keys():
  out = _cli("--config=configs/pangu/ultra_moe_718b.py", "--hardware=ascend_a2", f"--plan={PAPER_PLAN}", "--json")
  for k in ("mfu", "tokens_per_s", "step_time_s", "memory_per_device_gb", "fits"):
    assert k in out
  assert 0 < out["mfu"] < 1 and isinstance(out["fits"], bool)
  assert out["tokens_per_s"] * out["step_time_s"] == pytest.approx(1536 * 4096, rel=1e-9)


def test_cli_search_ranks_fitting_plans():
  out = _cli("--config=configs/pangu/small.py", "--hardware=h100", "--search", "--plan=devices=8,pp=1,vpp=1", "--json",
             "--noprogress", "--top=5")
  res = out["results"]
  assert res and all(r["fits"] for r in res)
  tps = [r["tokens_per_s"] for r in res]
  assert tps == sorted(tps, reverse=True)
  assert all(r["plan"]["devices"] == 8 for r in res)
  assert dataclasses.is_dataclass(make_plan(base_config(), {}))


def test_validation_plan_follows_the_layout():
  from pangu_jax.sim.validate import build_config, plan_for  # noqa: PLC0415

  cfg = build_config("dp2_ep4_8dev")
  sharded = plan_for(cfg, 8, True)
  assert (sharded.dp, sharded.ep, sharded.tp, sharded.devices) == (8, 4, 1, 8)
  assert sharded.mbs * sharded.dp == cfg.train.batch_size
  unsharded = plan_for(cfg, 8, False)
  assert (unsharded.devices, unsharded.mbs) == (1, cfg.train.batch_size)


@pytest.mark.slow
def test_calibrate_then_validate_a_tiny_config(tmp_path):
  """A quick calibration (microbenchmarks, the scan-residual probe included), then the real trainer on one
  single-device config; the prediction must be within a factor of two of the measurement (the full --validate,
  committed under results/sim, asks 0.15 median over 8). One config: the suite has a time budget.

  Runs in a process with XLA's normal optimisation: the suite compiles at LLVM -O0 (tests/conftest.py), which
  would slow the measured steps' elementwise code but not the calibrated GEMMs (library calls)."""
  code = f"""
import json
from pangu_jax.sim.calibrate import calibrate_to_file
from pangu_jax.sim.hardware import load_hardware
from pangu_jax.sim.validate import validate
path = {str(tmp_path / "hw.py")!r}
calibrate_to_file(path, quick=True)
hw = load_hardware(path)
assert hw.kernels == "xla_cpu" and hw.host_shared_compute
assert hw.residual_s_per_byte >= 0 and 0 < hw.recompute_ratio <= 2
out = validate(hw, ["e16_top1_noshared_1dev"], workdir={str(tmp_path / "runs")!r})
print(json.dumps(out["configs"]))
"""
  from conftest import full_opt_env  # noqa: PLC0415

  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full_opt_env(), capture_output=True, text=True,
                        timeout=1200)
  assert proc.returncode == 0, proc.stderr[-4000:]
  rows = json.loads(proc.stdout.strip().splitlines()[-1])
  assert len(rows) == 1
  for row in rows:
    assert row["measured_s"] > 0 and row["predicted_s"] > 0
    assert 0.5 < row["predicted_s"] / row["measured_s"] < 2.0, row


def test_steady_step_time_min_is_the_fastest_steady_interval():
  lines = [{"tokens_per_s": 1000.0}, {"tokens_per_s": 100.0}, {"tokens_per_s": 50.0}]
  assert steady_step_time(lines, 100, "min") == pytest.approx(1.0)


def test_paper_report_meets_the_issue_band_and_its_placement_check_agrees():
  """The issue's band for the paper setting (+-20% of 1.46M tokens/s, MFU 0.22-0.35 under the reference's
  accounting), and two paths to the same number: the placement check re-times our placement through its own
  loop and must give predict's tokens/s."""
  from experiments.sim_report import paper_report  # noqa: PLC0415

  rep = paper_report(_paper_cfg(), load_hardware("ascend_a2"))
  pred = rep["prediction"]
  assert 0.8 <= rep["tokens_per_s_ratio_to_paper"] <= 1.2
  assert 0.22 <= pred["mfu"] <= 0.35
  check = rep["placement_check"]
  assert check["placements"] == 33 * 32 // 2
  assert check["ours"]["tokens_per_s"] == pytest.approx(pred["tokens_per_s"], rel=1e-9)
  assert check["best"]["tokens_per_s"] >= pred["tokens_per_s"] >= check["worst"]["tokens_per_s"]


def test_published_runs_fit_rank_and_stay_in_a_sanity_band():
  """The development set (configs/published/runs.json): every plan that ran is predicted to fit in its devices'
  memory (issue 28 item 3: DeepSeek-V3's published plan on 80 GB H800s was predicted at 124.7 GB), each
  prediction within 2x of its published throughput (a defect like the 1/ep expert FLOPs leaves it), the two
  plans of one release on one cluster ranked as published, and the CLI's JSON carries the summary. The issue's
  accuracy targets (median error <= 0.15, every row <= 0.30) are reported, not asserted: docs/simulator.md."""
  from pangu_jax.sim.published import evaluate, load_set  # noqa: PLC0415

  rows = load_set()
  assert len(rows) >= 8 and {r["hardware"] for r in rows} >= {"h800", "h100", "gb200", "ascend_a2"}
  r = evaluate(rows)
  by_name = {x["name"]: x for x in r["runs"]}
  assert r["summary"]["all_ran_fit"], r["summary"]["not_fitting"]
  assert by_name["deepseek_v3_report_2048_h800"]["memory_per_device_gb"] <= 80
  for x in r["runs"]:
    assert 0.5 <= x["ratio"] <= 2.0, (x["name"], x["ratio"])
  assert r["summary"]["ranking"]["deepseek_v3/gb200x256/25.11"]["spearman_rho"] == pytest.approx(1.0)
  assert r["summary"]["median_abs_error"] == pytest.approx(
      sorted(x["abs_error"] for x in r["runs"])[len(rows) // 2 - (1 - len(rows) % 2)] if len(rows) % 2 else
      sum(sorted(x["abs_error"] for x in r["runs"])[len(rows) // 2 - 1:len(rows) // 2 + 1]) / 2)


def test_published_set_errors_are_one_line(tmp_path):
  from pangu_jax.sim.published import load_set  # noqa: PLC0415

  bad = tmp_path / "set.json"
  bad.write_text(json.dumps({"runs": [{"name": "x", "model": "m"}]}))
  with pytest.raises(ConfigError, match=r"row 0 \(x\): missing group, hardware, plan"):
    load_set(str(bad))
  bad.write_text("not json")
  with pytest.raises(ConfigError, match="not a development set"):
    load_set(str(bad))
