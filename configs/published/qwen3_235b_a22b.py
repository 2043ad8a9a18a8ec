"""Qwen3-235B-A22B as its Hugging Face config.json declares it, for the simulator's published-run development set
(configs/published/runs.json).

94 layers, all MoE (no dense layers, no shared expert), d=4096, GQA with 64 query heads and 4 key/value heads of
head_dim 128, 128 routed experts top-8 (softmax router, top-k renormalised), expert width 1536, vocab 151,936, no
MTP, pre-norm. Not modelled: Qwen3's per-head q/k RMSNorm (a norm over head_dim, negligible time).
"""

from pangu_jax.config import base_config


def get_config():
  cfg = base_config()
  cfg.model.update(
      num_layers=94, num_dense_layers=0, hidden_size=4096, num_heads=64, attention="gqa", num_kv_heads=4,
      head_dim=128, q_lora_rank=0, num_routed_experts=128, num_shared_experts=0, top_k=8, expert_ffn_dim=1536,
      vocab_size=151936, router_score="softmax", router_bias=False, norm_topk_prob=True, mtp_depth=0,
      sandwich_norm=False, tiny_init=False, max_seq_len=4096, dtype="bfloat16",
  )
  cfg.data.update(tokenizer="bpe", bpe_vocab_size=151936)
  cfg.train.update(batch_size=8192, seq_len=4096, steps=100000)
  return cfg
