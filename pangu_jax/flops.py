"""Model FLOPs per token, as the reference counts them for MFU (used by the trainer and the simulator).

Per token, forward + backward = 3 x forward:
  matmuls    2 x activated matmul parameters (attention projections, dense FFNs, router, shared experts,
             top_k routed experts, output head; the embedding lookup is not a matmul), forward;
  attention  scores and values: 2 x H x (qk_nope + qk_rope + v) x S per token per layer (GQA:
             2 x H x (head_dim + head_dim) x S), halved for causal masking (our convention: causal = half of the
             full S x S work), forward.
MTP modules are counted when `include_mtp` (they are real training work; the paper's MFU is for the main
model, so the simulator's paper comparison passes include_mtp=False). Recomputation is never counted.
"""

from __future__ import annotations

from pangu_jax.params import count_params


def matmul_params_per_token(cfg_model, include_mtp: bool = True) -> float:
  c = count_params(cfg_model)
  b = c["breakdown"]
  activated_nonmatmul = b["embedding"] + b.get("norms", 0) + b["final_norm"]
  n = c["activated_params"] - activated_nonmatmul
  if include_mtp and cfg_model.mtp_depth > 0:
    routed_per_layer = b.get("routed_experts", 0) / max(cfg_model.num_layers - cfg_model.num_dense_layers, 1)
    routed_inactive = routed_per_layer * (1 - cfg_model.top_k / cfg_model.num_routed_experts)
    n += c["mtp_params"] - cfg_model.mtp_depth * routed_inactive + cfg_model.mtp_depth * b["head"]
  return n


def attention_flops_per_token(cfg_model, seq_len: int, include_mtp: bool = True) -> float:
  layers = cfg_model.num_layers + (cfg_model.mtp_depth if include_mtp else 0)
  m = cfg_model
  if getattr(m, "attention", "mla") == "gqa":
    qk_plus_v = m.head_dim + m.head_dim
  else:
    qk_plus_v = m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim
  per_layer = 2 * m.num_heads * qk_plus_v * seq_len * 0.5
  return layers * per_layer


def train_flops_per_token(cfg_model, seq_len: int, include_mtp: bool = True) -> float:
  """Forward + backward model FLOPs per trained token."""
  fwd = 2 * matmul_params_per_token(cfg_model, include_mtp) + attention_flops_per_token(cfg_model, seq_len,
                                                                                       include_mtp)
  return 3 * fwd
