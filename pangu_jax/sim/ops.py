"""Operators of one training micro-batch on one device, and their predicted times.

Each layer kind (dense block, MoE block, embedding, head, MTP) expands into a forward list of `Op`s for one
micro-batch of B sequences x S tokens on one device of a plan (TP shards heads and FFN columns with sequence
parallelism; experts spread over ep_eff devices). The backward of a GEMM is two GEMMs of the same size (dX,
dW); of a bandwidth-bound op, twice its traffic. Two kernel sets:
  fused    the paper's operators: flash attention (causal blocks skipped), grouped matmul over exactly the
           routed rows, fused permute; Megatron-Core's sequence-parallel layout (norms, residuals and the MLA
           down-projections on the device's T/tp sequence shard).
  xla_cpu  what this repository's trainer runs on CPU: attention materialises the full S x S scores (fp32
           softmax), the grouped matmul pads each expert to 64-row blocks and gathers a weight copy per block;
           every device runs the norms and down-projections on all T tokens (as --validate measures).
Times: a GEMM takes flops / rate(M, K, N) (a measured table, or peak x eff_max x f(M) f(K) f(N) with
f(x) = x / (x + half_dim)); a bandwidth-bound op takes bytes / bandwidth; every kernel adds a fixed overhead.
"""

from __future__ import annotations

import dataclasses

from pangu_jax.sim.hardware import gemm_table, log_interp_rate

BYTES = {"bfloat16": 2, "float32": 4}
CPU_GMM_BLOCK = 64  # pangu_jax.config default gmm_block_size


@dataclasses.dataclass(frozen=True)
class Op:
  name: str
  cls: str  # "gemm" | "attn" | "vector" | "gather"
  flops: float = 0.0
  bytes: float = 0.0
  gemm: tuple = ()  # (M, K, N, batch) for gemm ops
  recompute_fine: bool = False  # recomputed under fine-grained remat (norms, activations, permutations)
  kernels: int = 1


def gemm(name, m, k, n, batch=1, s=2):
  m, k, n = max(m, 1), max(k, 1), max(n, 1)
  return Op(name, "gemm", flops=2.0 * m * k * n * batch, bytes=s * batch * (m * k + k * n + m * n),
            gemm=(m, k, n, batch))


def vec(name, elems, passes, s, fine=True, flops_per=4.0):
  """A bandwidth-bound op over `elems` elements touching memory `passes` times (reads + writes)."""
  return Op(name, "vector", flops=flops_per * elems, bytes=passes * elems * s, recompute_fine=fine)


def gather(name, rows, width, s, fine=True):
  return Op(name, "gather", bytes=2.0 * rows * width * s, recompute_fine=fine)


def sequence_shard(t: int, tp: int, kernels: str) -> int:
  """Tokens a device's norms, residuals and MLA down-projections see. Fused kernels: the paper's framework with
  sequence parallelism (Megatron-Core's layout), T/tp. xla_cpu: our trainer's GSPMD layout, as measured by
  --validate, runs them on all T tokens."""
  return t // tp if kernels == "fused" else t


def attention_ops(m, b, sq, tp, s, kernels):
  """MLA forward on one device: T = b*sq tokens, H/tp heads. Under sequence parallelism (fused) the input norm,
  the q/kv down-projections and their norms run on the device's sequence shard and only the low-rank latents
  are gathered for the head-sharded up-projections (Megatron-Core's MLA; the gather is in predict.layer_cost);
  the attention core, up- and output projections work on all T tokens of H/tp heads."""
  t, h = b * sq, m.num_heads // tp
  tl = sequence_shard(t, tp, kernels)
  qk = m.qk_nope_head_dim + m.qk_rope_head_dim
  ops = [vec("attn_norm", tl * m.hidden_size, 2, s)]
  if m.q_lora_rank > 0:
    ops += [gemm("q_a", tl, m.hidden_size, m.q_lora_rank, s=s), vec("q_a_norm", tl * m.q_lora_rank, 2, s),
            gemm("q_b", t, m.q_lora_rank, h * qk, s=s)]
  else:
    ops += [gemm("q", t, m.hidden_size, h * qk, s=s)]
  ops += [gemm("kv_a", tl, m.hidden_size, m.kv_lora_rank + m.qk_rope_head_dim, s=s),
          vec("kv_a_norm", tl * m.kv_lora_rank, 2, s),
          vec("rope", t * (h + 1) * m.qk_rope_head_dim, 3, s),
          gemm("kv_b", t, m.kv_lora_rank, h * (m.qk_nope_head_dim + m.v_head_dim), s=s),
          vec("concat_qk", t * h * qk, 4, s)]
  if kernels == "fused":
    fl = 2.0 * b * h * sq * sq * (qk + m.v_head_dim) * 0.5  # causal blocks skipped
    ops.append(Op("attention_core", "attn", flops=fl, bytes=s * t * h * (2 * qk + 2 * m.v_head_dim)))
  else:
    ops += [gemm("scores", sq, qk, sq, batch=b * h, s=s),
            vec("softmax", b * h * sq * sq, 5, 4, fine=False, flops_per=8.0),
            gemm("probs_v", sq, sq, m.v_head_dim, batch=b * h, s=s)]
  ops += [gemm("o", t, h * m.v_head_dim, m.hidden_size, s=s), vec("post_attn_norm", tl * m.hidden_size, 2, s),
          vec("residual", tl * m.hidden_size, 3, s, fine=False, flops_per=1.0)]
  return ops


def attention_gather_width(m, kernels) -> int:
  """Per-token width the attention's sequence-parallel all-gather moves: the hidden state, or under
  Megatron-Core's MLA (fused) the q and kv latents + the shared RoPE key (the hidden state when q is not
  compressed, since its projection then needs it)."""
  if kernels != "fused":
    return m.hidden_size
  return (m.q_lora_rank if m.q_lora_rank > 0 else m.hidden_size) + m.kv_lora_rank + m.qk_rope_head_dim


def mlp_ops(prefix, t, d, f, s):
  return [gemm(f"{prefix}_w_in", t, d, 2 * f, s=s), vec(f"{prefix}_swiglu", t * 3 * f, 1, s, flops_per=5.0),
          gemm(f"{prefix}_w_out", t, f, d, s=s)]


def dense_ffn_ops(m, b, sq, tp, s, kernels):
  t, d = b * sq, m.hidden_size
  tl = sequence_shard(t, tp, kernels)
  return ([vec("mlp_norm", tl * d, 2, s)] + mlp_ops("dense", t, d, m.dense_ffn_dim // tp, s)
          + [vec("post_mlp_norm", tl * d, 2, s), vec("residual2", tl * d, 3, s, fine=False, flops_per=1.0)])


def moe_ops(m, b, sq, plan, s, kernels):
  """Router, permute, routed experts (grouped matmul), unpermute, shared experts, on one device.
  Tokens per device: T/tp with TP-extend-EP (sequence-parallel shard), T without (TP all-gathers first)."""
  t, d, e, k, f = b * sq, m.hidden_size, m.num_routed_experts, m.top_k, m.expert_ffn_dim
  tp = plan.tp
  t_loc = t // tp if (plan.tp_extend_ep or tp == 1) else t
  f_loc = f if (plan.tp_extend_ep or tp == 1) else f // tp
  assign = t_loc * k  # rows this device's experts process (balanced routing, our assumption)
  e_loc = max(e // plan.ep_eff, 1)
  if not plan.tp_extend_ep and tp > 1:
    assign = t * k // plan.ep  # the ep group's tokens, each expert's FFN split over tp
  t_norm = t_loc if kernels != "fused" else t // tp  # norms and residual: on the sequence shard under fused
  ops = [vec("mlp_norm", t_norm * d, 2, s), gemm("router", t_loc, d, e, s=4),
         vec("gating", t_loc * e, 6, 4, flops_per=10.0), gather("permute", t_loc * k, d, s),
         vec("sort", t_loc * k, 8, 4, flops_per=20.0)]
  if kernels == "fused":
    rows = max(assign // e_loc, 1)
    ops += [gemm("experts_w_in", rows, d, 2 * f_loc, batch=e_loc, s=s),
            vec("experts_swiglu", assign * 3 * f_loc, 1, s, flops_per=5.0),
            gemm("experts_w_out", rows, f_loc, d, batch=e_loc, s=s)]
  else:
    blk = CPU_GMM_BLOCK
    assign = cpu_expert_rows(assign, t_loc * k, plan)
    nb = -(-assign // blk) + e_loc  # pangu_jax.kernels.grouped_matmul layout: ceil(M / block) + G blocks
    ops += [gather("gmm_pad_in", nb * blk, d, s), gather("gmm_w_in_copy", nb * d, 2 * f_loc, s, fine=False),
            gemm("experts_w_in", blk, d, 2 * f_loc, batch=nb, s=s), gather("gmm_unpad_in", assign, 2 * f_loc, s),
            vec("experts_swiglu", assign * 3 * f_loc, 1, s, flops_per=5.0),
            gather("gmm_pad_out", nb * blk, f_loc, s), gather("gmm_w_out_copy", nb * f_loc, d, s, fine=False),
            gemm("experts_w_out", blk, f_loc, d, batch=nb, s=s), gather("gmm_unpad_out", assign, d, s)]
  ops += [gather("unpermute", t_loc * k, d, s), vec("combine", t_loc * k * d, 1, s, flops_per=2.0)]
  if m.num_shared_experts > 0:
    ops += mlp_ops("shared", t_loc, d, m.num_shared_experts * f // (1 if t_loc != t or tp == 1 else tp), s)
  ops += [vec("post_mlp_norm", t_norm * d, 2, s), vec("residual2", t_norm * d, 3, s, fine=False, flops_per=1.0)]
  return ops


def cpu_expert_rows(assign, sent, plan):
  """Rows the CPU trainer's experts compute on one device. Under expert parallelism its exchange
  (pangu_jax.parallel.expert_parallel) has a static worst-case buffer: every device receives one slot of C = its
  sender's token x top-k rows (`sent`) from each of the ep_eff devices, valid or not, and the grouped matmul runs
  over all of them (invalid rows go to a zero-weight padding group). Without EP: the balanced `assign`."""
  return sent * plan.ep_eff if plan.ep_eff > 1 else assign


def moe_gmm_weight_bytes(m, plan, s):
  """Per-block weight copies of the CPU grouped matmul: the backward writes a dW per block and sums them."""
  t = plan.mbs * plan.seq
  extend = plan.tp_extend_ep or plan.tp == 1
  t_loc = t // plan.tp if extend else t
  assign = cpu_expert_rows(t_loc * m.top_k if extend else t * m.top_k // plan.ep, t_loc * m.top_k, plan)
  f_loc = m.expert_ffn_dim if extend else m.expert_ffn_dim // plan.tp
  nb = -(-assign // CPU_GMM_BLOCK) + max(m.num_routed_experts // plan.ep_eff, 1)
  return nb * 3 * m.hidden_size * f_loc * s


def head_ops(m, b, sq, tp, s, kernels):
  t = b * sq
  v = m.vocab_size // tp
  return [vec("final_norm", sequence_shard(t, tp, kernels) * m.hidden_size, 2, s),
          gemm("head", t, m.hidden_size, v, s=s),
          vec("cross_entropy", t * v, 4, 4, fine=False, flops_per=6.0)]


def embed_ops(m, b, sq, s):
  return [gather("embed", b * sq, m.hidden_size, s, fine=False)]


def mtp_extra_ops(m, b, sq, tp, s, kernels):
  """The MTP block's own embedding lookup, its two input norms and the 2d -> d projection. Fused (Megatron-Core):
  norms on the sequence shard, the projection column-parallel over tp (its input gathered, its output gathered
  along the hidden dim: predict.tp_collectives). xla_cpu: as our trainer runs it, on every device in full."""
  t, d = b * sq, m.hidden_size
  tl = sequence_shard(t, tp, kernels)
  d_out = d // tp if kernels == "fused" else d
  return [gather("mtp_embed", t, d, s, fine=False), vec("mtp_norms", 2 * tl * d, 2, s),
          gemm("mtp_proj", t, 2 * d, d_out, s=s)]


# ---------------------------------------------------------------------------------------------- timing


def _f(x, half):
  return x / (x + half)


def gemm_rate(hw, m, k, n, dtype) -> float:
  table = gemm_table(hw)
  if table:
    return log_interp_rate(table, m, k, n)
  h = hw.gemm_half_dim
  return hw.matmul_peak[dtype] * hw.gemm_eff_max * _f(m, h) * _f(k, h) * _f(n, h) / _f(1e9, h) ** 3


def bandwidth(hw) -> float:
  return hw.mem_bw * hw.mem_bw_eff


def op_time(op: Op, hw, dtype: str) -> float:
  """Predicted seconds of one forward op."""
  bw = bandwidth(hw)
  if op.cls == "gemm":
    m, k, n, batch = op.gemm
    t = max(op.flops / gemm_rate(hw, m, k, n, dtype), op.bytes / bw)
  elif op.cls == "attn":
    t = max(op.flops / (hw.matmul_peak[dtype] * hw.attn_eff), op.bytes / bw)
  elif op.cls == "gather":
    t = op.bytes / (hw.gather_bw or bw)
  else:
    t = max(op.flops / hw.vector_peak[dtype], op.bytes / bw)
  return t + hw.op_overhead_s * op.kernels


def backward_time(op: Op, hw, dtype: str) -> float:
  """A GEMM's backward is dX = dY W^T (M, N, K) and dW = X^T dY (K, M, N), each timed at its own shape;
  attention's is twice its forward; a bandwidth-bound op's, twice its traffic."""
  if op.cls == "gemm":
    m, k, n, batch = op.gemm
    bw = bandwidth(hw)
    t = 0.0
    for mm, kk, nn in ((m, n, k), (k, m, n)):
      t += max(op.flops / gemm_rate(hw, mm, kk, nn, dtype), op.bytes / bw) + hw.op_overhead_s * op.kernels
    return t
  return 2.0 * op_time(op, hw, dtype)


def ops_times(ops, hw, dtype):
  """(forward, backward, fine-remat recompute) seconds of an op list."""
  fwd = sum(op_time(o, hw, dtype) for o in ops)
  bwd = sum(backward_time(o, hw, dtype) for o in ops)
  fine = sum(op_time(o, hw, dtype) for o in ops if o.recompute_fine)
  return fwd, bwd, fine


def total_flops(ops) -> float:
  return sum(o.flops for o in ops)


def ceil_div(a, b):
  return -(-a // b)
