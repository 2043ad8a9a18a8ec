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
FP8 (plan.fp8, DeepSeek-V3's recipe): the GEMMs of every linear layer (attention projections, dense and shared
FFNs, routed experts, the MTP projection; `Op.fp8`) run forward, dgrad and wgrad at the hardware's `fp8_peak`;
the embedding, router, output head and attention core stay in bf16. Each FP8 GEMM reads 1-byte inputs and pays
its quantisation as traffic: the activation quantised in the forward (read 2 bytes, write 1 per element), the
output gradient and the transposed activation in the backward (weights are quantised once per step, not
charged per micro-batch). Norms are charged after attention and the FFN only with `model.sandwich_norm`.
GQA (`model.attention="gqa"`): q, k, v, o projections of H x head_dim (k, v: num_kv_heads x head_dim; KV heads
replicated when tp exceeds them), RoPE on q and k, flash attention over head_dim.
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
  fp8: bool = False  # a linear layer's GEMM: runs in FP8 under plan.fp8
  recompute_selective: bool = False  # also recomputed under remat="selective" (the MLA up-projections)


def gemm(name, m, k, n, batch=1, s=2, fp8=True, selective=False):
  m, k, n = max(m, 1), max(k, 1), max(n, 1)
  return Op(name, "gemm", flops=2.0 * m * k * n * batch, bytes=s * batch * (m * k + k * n + m * n),
            gemm=(m, k, n, batch), fp8=fp8, recompute_selective=selective)


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
  the attention core, up- and output projections work on all T tokens of H/tp heads. GQA: gqa_attention_ops."""
  if is_gqa(m):
    return gqa_attention_ops(m, b, sq, tp, s, kernels)
  t, h = b * sq, m.num_heads // tp
  tl = sequence_shard(t, tp, kernels)
  qk = m.qk_nope_head_dim + m.qk_rope_head_dim
  ops = [vec("attn_norm", tl * m.hidden_size, 2, s)]
  if m.q_lora_rank > 0:
    ops += [gemm("q_a", tl, m.hidden_size, m.q_lora_rank, s=s), vec("q_a_norm", tl * m.q_lora_rank, 2, s),
            gemm("q_b", t, m.q_lora_rank, h * qk, s=s, selective=True)]
  else:
    ops += [gemm("q", t, m.hidden_size, h * qk, s=s)]
  ops += [gemm("kv_a", tl, m.hidden_size, m.kv_lora_rank + m.qk_rope_head_dim, s=s),
          vec("kv_a_norm", tl * m.kv_lora_rank, 2, s),
          vec("rope", t * (h + 1) * m.qk_rope_head_dim, 3, s),
          gemm("kv_b", t, m.kv_lora_rank, h * (m.qk_nope_head_dim + m.v_head_dim), s=s, selective=True),
          vec("concat_qk", t * h * qk, 4, s)]
  ops += _attention_core(b, sq, h, qk, m.v_head_dim, s, kernels)
  return ops + _attention_out(m, t, tl, h * m.v_head_dim, s)


def _attention_core(b, sq, h, qk, v, s, kernels):
  t = b * sq
  if kernels == "fused":
    fl = 2.0 * b * h * sq * sq * (qk + v) * 0.5  # causal blocks skipped
    return [Op("attention_core", "attn", flops=fl, bytes=s * t * h * (2 * qk + 2 * v))]
  return [gemm("scores", sq, qk, sq, batch=b * h, s=s, fp8=False),
          vec("softmax", b * h * sq * sq, 5, 4, fine=False, flops_per=8.0),
          gemm("probs_v", sq, sq, v, batch=b * h, s=s, fp8=False)]


def _attention_out(m, t, tl, width, s):
  ops = [gemm("o", t, width, m.hidden_size, s=s)]
  if m.sandwich_norm:
    ops.append(vec("post_attn_norm", tl * m.hidden_size, 2, s))
  return ops + [vec("residual", tl * m.hidden_size, 3, s, fine=False, flops_per=1.0)]


def is_gqa(m) -> bool:
  return m.get("attention", "mla") == "gqa" if hasattr(m, "get") else getattr(m, "attention", "mla") == "gqa"


def kv_heads_per_device(m, tp) -> int:
  """GQA key/value heads on one device: num_kv_heads / tp, at least one (replicated when tp exceeds them)."""
  return max(m.num_kv_heads // tp, 1)


def gqa_attention_ops(m, b, sq, tp, s, kernels):
  """GQA forward on one device: H/tp query heads, kv_heads_per_device key/value heads of head_dim; the input norm
  on the sequence shard (fused), the projections column-parallel over all T tokens."""
  t, h, hd = b * sq, m.num_heads // tp, m.head_dim
  tl = sequence_shard(t, tp, kernels)
  kv = kv_heads_per_device(m, tp)
  ops = [vec("attn_norm", tl * m.hidden_size, 2, s), gemm("q", t, m.hidden_size, h * hd, s=s),
         gemm("kv", t, m.hidden_size, 2 * kv * hd, s=s), vec("rope", t * (h + kv) * hd, 3, s)]
  ops += _attention_core(b, sq, h, hd, hd, s, kernels)
  return ops + _attention_out(m, t, tl, h * hd, s)


def attention_gather_width(m, kernels) -> int:
  """Per-token width the attention's sequence-parallel all-gather moves: the hidden state, or under
  Megatron-Core's MLA (fused) the q and kv latents + the shared RoPE key (the hidden state when q is not
  compressed, since its projection then needs it)."""
  if kernels != "fused" or is_gqa(m):
    return m.hidden_size
  return (m.q_lora_rank if m.q_lora_rank > 0 else m.hidden_size) + m.kv_lora_rank + m.qk_rope_head_dim


def mlp_ops(prefix, t, d, f, s):
  return [gemm(f"{prefix}_w_in", t, d, 2 * f, s=s), vec(f"{prefix}_swiglu", t * 3 * f, 1, s, flops_per=5.0),
          gemm(f"{prefix}_w_out", t, f, d, s=s)]


def _ffn_tail(m, tl, d, s):
  post = [vec("post_mlp_norm", tl * d, 2, s)] if m.sandwich_norm else []
  return post + [vec("residual2", tl * d, 3, s, fine=False, flops_per=1.0)]


def dense_ffn_ops(m, b, sq, tp, s, kernels):
  t, d = b * sq, m.hidden_size
  tl = sequence_shard(t, tp, kernels)
  return [vec("mlp_norm", tl * d, 2, s)] + mlp_ops("dense", t, d, m.dense_ffn_dim // tp, s) + _ffn_tail(m, tl, d, s)


def expert_split(plan) -> bool:
  """Each routed expert's FFN split over tp (tp > 1 without TP-extend-EP; Megatron-Core's ETP = TP)."""
  return plan.tp > 1 and not plan.tp_extend_ep


def routed_tokens(t, plan, kernels) -> int:
  """Tokens one device routes (router, permute, dispatch): its sequence shard T/tp, except under our CPU
  trainer's layout with split experts, which gathers all T tokens over tp first."""
  return t if (expert_split(plan) and kernels != "fused") else t // plan.tp


def expert_rows(t, k, plan) -> int:
  """(token, expert) rows one device's experts process for a micro-batch of its DP rank's T tokens under
  balanced routing: T k / tp with each expert whole (TP-extend-EP or tp 1); T k at 1/tp of the width with
  split experts (the rows of its ep peers' tp sequence shards, gathered over tp). Either way the stage's devices
  together process each of its dp x T x k pairs exactly once at full width (test_sim: FLOPs conservation)."""
  return t * k if expert_split(plan) else t // plan.tp * k


def moe_ops(m, b, sq, plan, s, kernels):
  """Router, permute, routed experts (grouped matmul), unpermute, shared experts, on one device (routed_tokens,
  expert_rows). Shared experts: whole, on the routed tokens, when the experts are whole; TP-split over all T
  tokens with split experts (a TP MLP; its hidden-state gather is in predict.tp_collectives)."""
  t, d, e, k, f = b * sq, m.hidden_size, m.num_routed_experts, m.top_k, m.expert_ffn_dim
  tp, split = plan.tp, expert_split(plan)
  t_loc = routed_tokens(t, plan, kernels)
  f_loc = f // tp if split else f
  assign = expert_rows(t, k, plan)
  e_loc = max(e // plan.ep_eff, 1)
  t_norm = t_loc if kernels != "fused" else t // tp  # norms and residual: on the sequence shard under fused
  ops = [vec("mlp_norm", t_norm * d, 2, s), gemm("router", t_loc, d, e, s=4, fp8=False),
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
    fs = m.num_shared_experts * f
    ops += mlp_ops("shared", t, d, fs // tp, s) if split else mlp_ops("shared", t_loc, d, fs, s)
  return ops + _ffn_tail(m, t_norm, d, s)


def cpu_expert_rows(assign, sent, plan):
  """Rows the CPU trainer's experts compute on one device. Under expert parallelism its exchange
  (pangu_jax.parallel.expert_parallel) has a static worst-case buffer: every device receives one slot of C = its
  sender's token x top-k rows (`sent`) from each of the ep_eff devices, valid or not, and the grouped matmul runs
  over all of them (invalid rows go to a zero-weight padding group). Without EP: the balanced `assign`."""
  return sent * plan.ep_eff if plan.ep_eff > 1 else assign


def moe_gmm_weight_bytes(m, plan, s):
  """Per-block weight copies of the CPU grouped matmul: the backward writes a dW per block and sums them."""
  t = plan.mbs * plan.seq
  t_loc = routed_tokens(t, plan, "xla_cpu")
  assign = cpu_expert_rows(expert_rows(t, m.top_k, plan), t_loc * m.top_k, plan)
  f_loc = m.expert_ffn_dim // plan.tp if expert_split(plan) else m.expert_ffn_dim
  nb = -(-assign // CPU_GMM_BLOCK) + max(m.num_routed_experts // plan.ep_eff, 1)
  return nb * 3 * m.hidden_size * f_loc * s


def head_ops(m, b, sq, tp, s, kernels):
  t = b * sq
  v = m.vocab_size // tp
  return [vec("final_norm", sequence_shard(t, tp, kernels) * m.hidden_size, 2, s),
          gemm("head", t, m.hidden_size, v, s=s, fp8=False),
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
  """FLOP/s of an (M, K, N) GEMM; dtype "float8" scales the bf16 figure by fp8_peak / bf16 peak."""
  scale = 1.0
  if dtype == "float8":
    scale, dtype = hw.fp8_peak / hw.matmul_peak["bfloat16"], "bfloat16"
  table = gemm_table(hw)
  if table:
    return scale * log_interp_rate(table, m, k, n)
  h = hw.gemm_half_dim
  return scale * hw.matmul_peak[dtype] * hw.gemm_eff_max * _f(m, h) * _f(k, h) * _f(n, h) / _f(1e9, h) ** 3


def bandwidth(hw) -> float:
  return hw.mem_bw * hw.mem_bw_eff


def _gemm_dtype(op: Op, dtype: str, fp8: bool) -> str:
  return "float8" if (fp8 and op.fp8) else dtype


def _gemm_bytes(op: Op, s_in: float, s_out: float) -> float:
  m, k, n, batch = op.gemm
  return batch * (s_in * (m * k + k * n) + s_out * m * n)


def op_time(op: Op, hw, dtype: str, fp8: bool = False) -> float:
  """Predicted seconds of one forward op (fp8: the plan runs its linear layers' GEMMs in FP8)."""
  bw = bandwidth(hw)
  if op.cls == "gemm":
    m, k, n, batch = op.gemm
    gd = _gemm_dtype(op, dtype, fp8)
    nbytes = op.bytes
    quant = 0.0
    if gd == "float8":
      nbytes = _gemm_bytes(op, 1, BYTES[dtype])
      quant = 3.0 * batch * m * k / bw  # quantise the activation (read bf16, write fp8)
    t = max(op.flops / gemm_rate(hw, m, k, n, gd), nbytes / bw) + quant
  elif op.cls == "attn":
    t = max(op.flops / (hw.matmul_peak[dtype] * hw.attn_eff), op.bytes / bw)
  elif op.cls == "gather":
    t = op.bytes / (hw.gather_bw or bw)
  else:
    t = max(op.flops / hw.vector_peak[dtype], op.bytes / bw)
  return t + hw.op_overhead_s * op.kernels


def backward_time(op: Op, hw, dtype: str, fp8: bool = False) -> float:
  """A GEMM's backward is dX = dY W^T (M, N, K) and dW = X^T dY (K, M, N), each timed at its own shape (in FP8:
  plus quantising dY and the transposed activation); attention's is twice its forward; a bandwidth-bound op's,
  twice its traffic."""
  if op.cls == "gemm":
    m, k, n, batch = op.gemm
    bw = bandwidth(hw)
    gd = _gemm_dtype(op, dtype, fp8)
    nbytes = _gemm_bytes(op, 1, BYTES[dtype]) if gd == "float8" else op.bytes
    t = 3.0 * batch * (m * n + m * k) / bw if gd == "float8" else 0.0
    for mm, kk, nn in ((m, n, k), (k, m, n)):
      t += max(op.flops / gemm_rate(hw, mm, kk, nn, gd), nbytes / bw) + hw.op_overhead_s * op.kernels
    return t
  return 2.0 * op_time(op, hw, dtype, fp8)


def ops_times(ops, hw, dtype, fp8: bool = False, selective: bool = False):
  """(forward, backward, fine-remat recompute) seconds of an op list; `selective` adds the ops that
  remat="selective" recomputes beyond fine's (the MLA up-projections)."""
  fwd = sum(op_time(o, hw, dtype, fp8) for o in ops)
  bwd = sum(backward_time(o, hw, dtype, fp8) for o in ops)
  fine = sum(op_time(o, hw, dtype, fp8) for o in ops if o.recompute_fine or (selective and o.recompute_selective))
  return fwd, bwd, fine


def total_flops(ops) -> float:
  return sum(o.flops for o in ops)


def ceil_div(a, b):
  return -(-a // b)
