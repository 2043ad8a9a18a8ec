"""Reference implementations of the torch_npu fused ops this model maps to, with op-plugin signatures.

Each function has the name, arguments, outputs and index conventions of the `torch_npu.npu_*` op (from
Ascend's op-plugin documentation, abridged in docs/reference/npu_backend.md) and computes it with plain
torch, so the NPU lowering path runs, and is tested against the JAX decomposition, anywhere. Where the
public docs leave a convention open, the docstring says which reading we implement ("our reading"); verify
those against the real op on an NPU before trusting a fused run.

Torch only: no JAX import.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def npu_rms_norm(x, gamma, epsilon=1e-6):
  """-> (y, rstd): y = x * rstd * gamma with rstd = 1/sqrt(mean(x^2) + eps) over the last dim (fp32 math)."""
  xf = x.float()
  rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + epsilon)
  return (xf * rstd * gamma.float()).to(x.dtype), rstd


def npu_rotary_mul(x, r1, r2, rotary_mode="half"):
  """x * r1 + rotate(x) * r2 with r1 = cos, r2 = sin; 'half': rotate(x) = cat(-x2, x1) of the two halves."""
  if rotary_mode != "half":
    raise NotImplementedError(f"npu_rotary_mul reference: rotary_mode {rotary_mode!r} (only 'half')")
  xf = x.float()
  h = x.shape[-1] // 2
  rot = torch.cat([-xf[..., h:], xf[..., :h]], dim=-1)
  return (xf * r1.float() + rot * r2.float()).to(x.dtype)


def npu_swiglu(x, dim=-1):
  """silu(a) * b where (a, b) = x split in two halves along `dim`."""
  a, b = x.chunk(2, dim=dim)
  return F.silu(a) * b


def npu_moe_gating_top_k(x, k, *, bias=None, k_group=1, group_count=1, group_select_mode=0, renorm=0, norm_type=0,
                         out_flag=False, routed_scaling_factor=1.0, eps=1e-20):
  """-> (y, expert_idx, out). x: router logits (T, E).

  Our reading: out = normalised scores, softmax (norm_type 0) or sigmoid (norm_type 1); experts are selected
  on out + bias (bias only selects); y = the selected experts' scores, renormalised to sum 1 for sigmoid,
  times routed_scaling_factor; expert_idx int32; ties go to the lower index. No group-limited routing
  (k_group = group_count = 1), as Pangu Ultra MoE.
  """
  if k_group != 1 or group_count != 1:
    raise NotImplementedError("npu_moe_gating_top_k reference: group-limited routing")
  out = torch.softmax(x.float(), -1) if norm_type == 0 else torch.sigmoid(x.float())
  sel = out + (bias.float() if bias is not None else 0.0)
  idx = torch.sort(sel, dim=-1, descending=True, stable=True).indices[..., :k]
  y = torch.gather(out, -1, idx)
  if norm_type == 1:
    y = y / (y.sum(-1, keepdim=True) + eps)
  return y * routed_scaling_factor, idx.to(torch.int32), out


def npu_moe_gating_top_k_softmax(x, finished=None, k=1):
  """-> (y, expert_idx, row_idx): softmax then top-k; row_idx = arange(N*k).reshape(k, N).T (op-plugin)."""
  p = torch.softmax(x.float(), -1)
  idx = torch.sort(p, dim=-1, descending=True, stable=True).indices[..., :k]
  n = x.shape[0]
  row_idx = torch.arange(n * k, dtype=torch.int32).reshape(k, n).T.contiguous()
  return torch.gather(p, -1, idx).to(x.dtype), idx.to(torch.int32), row_idx


def npu_moe_init_routing_v2(x, expert_idx, *, scale=None, offset=None, active_num=-1, expert_capacity=-1,
                            expert_num=-1, drop_pad_mode=0, expert_tokens_num_type=0, expert_tokens_num_flag=False,
                            quant_mode=-1, active_expert_range=None, row_idx_type=0):
  """-> (expanded_x, expanded_row_idx, expert_tokens_count_or_cumsum, pertoken_scale). Dropless (mode 0).

  Our reading: assignments are numbered token-major (s = t * k + j); they are sorted by expert, stably;
  expanded_x[p] = x[token of the p-th sorted assignment]; expanded_row_idx[s] = the position p of assignment
  s (source -> destination, as npu_moe_finalize_routing consumes it); expert token counts when
  expert_tokens_num_type = 1, their cumulative sum when 0.
  """
  if drop_pad_mode != 0:
    raise NotImplementedError("npu_moe_init_routing_v2 reference: only dropless (drop_pad_mode=0)")
  t, k = expert_idx.shape
  flat = expert_idx.reshape(-1).long()
  order = torch.sort(flat, stable=True).indices
  expanded_x = x.index_select(0, order // k)
  src_to_dst = torch.empty_like(order)
  src_to_dst[order] = torch.arange(order.numel())
  e = expert_num if expert_num > 0 else int(flat.max()) + 1
  counts = torch.bincount(flat, minlength=e)
  tokens = counts if expert_tokens_num_type == 1 else counts.cumsum(0)
  return expanded_x, src_to_dst.to(torch.int32), tokens.to(torch.int64), None


def npu_grouped_matmul(x, weight, *, bias=None, scale=None, offset=None, antiquant_scale=None,
                       antiquant_offset=None, per_token_scale=None, group_list=None, activation_input=None,
                       activation_quant_scale=None, activation_quant_offset=None, split_item=0, group_type=None,
                       group_list_type=0, act_type=0, output_dtype=None):
  """-> list of outputs. Our supported form (the MoE one): x = [X (M, K)] rows sorted by group,
  weight = [W (G, K, N)] (or G tensors (K, N)), group_list = counts (group_list_type 1) or cumulative ends
  (0), split_item 2 or 3 (one concatenated output)."""
  xx = x[0]
  w = weight[0] if len(weight) == 1 and weight[0].ndim == 3 else torch.stack(list(weight))
  gl = torch.as_tensor(group_list).long()
  ends = gl.cumsum(0) if group_list_type == 1 else gl
  out = torch.zeros(xx.shape[0], w.shape[-1], dtype=xx.dtype, device=xx.device)
  start = 0
  for g, end in enumerate(ends.tolist()):
    if end > start:
      out[start:end] = xx[start:end] @ w[g]
    start = end
  return [out]


def npu_moe_finalize_routing(expanded_permuted_rows, skip1, skip2, bias, scales, expanded_src_to_dst_row,
                             expert_for_source_row, drop_pad_mode=0):
  """out[t] = skip1[t] + skip2[t] + sum_j scales[t, j] * (rows[dst(t*k+j)] + bias[expert(t, j)]).

  Our reading of the index convention: expanded_src_to_dst_row is indexed by the token-major assignment
  number s = t * k + j (as npu_moe_init_routing_v2 above returns it).
  """
  t, k = scales.shape
  rows = expanded_permuted_rows.index_select(0, expanded_src_to_dst_row.reshape(-1).long()).reshape(t, k, -1)
  if bias is not None:
    rows = rows + bias[expert_for_source_row.long()]
  out = (rows * scales.to(rows.dtype).unsqueeze(-1)).sum(1)
  for skip in (skip1, skip2):
    if skip is not None:
      out = out + skip
  return out


def npu_fusion_attention(query, key, value, head_num, input_layout, pse=None, padding_mask=None, atten_mask=None,
                         scale=1.0, keep_prob=1.0, pre_tockens=2147483647, next_tockens=2147483647,
                         inner_precise=0, prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None,
                         sparse_mode=0, gen_mask_parallel=True, sync=False):
  """-> (attention_out, softmax_max, softmax_sum, softmax_out, seed, offset, numels). Layout "BSND" only;
  atten_mask: True = masked out (broadcast to (B, N, S, T)); value may have a different head dim. GQA: key and
  value may have N_kv heads, N_kv dividing head_num; query head n reads key/value head n // (head_num / N_kv)
  (the op-plugin's grouping)."""
  if input_layout != "BSND":
    raise NotImplementedError(f"npu_fusion_attention reference: layout {input_layout!r} (only 'BSND')")
  n_kv = key.shape[2]
  if head_num % n_kv or value.shape[2] != n_kv:
    raise ValueError(f"npu_fusion_attention: {n_kv} key / {value.shape[2]} value heads for head_num {head_num}")
  if n_kv != head_num:
    key = key.repeat_interleave(head_num // n_kv, dim=2)
    value = value.repeat_interleave(head_num // n_kv, dim=2)
  scores = torch.einsum("bsnd,btnd->bnst", query.float(), key.float()) * scale
  if atten_mask is not None:
    scores = scores.masked_fill(atten_mask.bool(), float("-inf"))
  m = scores.amax(-1, keepdim=True)
  p = torch.exp(scores - m)
  s = p.sum(-1, keepdim=True)
  out = torch.einsum("bnst,btnd->bsnd", p / s, value.float()).to(query.dtype)
  return out, m, s, None, 0, 0, 0


OPS = {name: fn for name, fn in globals().items() if name.startswith("npu_")}
