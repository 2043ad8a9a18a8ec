"""Pangu Ultra MoE 718B as published (see docs/reference/pangu_ultra_moe.md).

61 layers (3 dense + 58 MoE), d=7680, MLA with DeepSeek-V3's dims, 256 routed experts top-8 + 1 shared,
expert width 2048, dense FFN 18432, sigmoid router with selection bias, one MTP layer.
Uncertain values (tagged [?] in the reference) and our choices:
  - MLA dims 1536/512/128/64/128 and dense FFN 18432: DeepSeek-V3's, single-source.
  - vocab 153,600 (a sibling release; Ultra MoE's is unstated).
  - routed_scaling_factor 2.5 and top-k renormalisation: DeepSeek-V3's values (assumption).
  - DSSN constants: Pangu Ultra's (0.283, 0.432); Ultra MoE's are unpublished.
"""

from pangu_jax.config import base_config


def get_config():
  cfg = base_config()
  cfg.model.update(
      num_layers=61, num_dense_layers=3, hidden_size=7680, num_heads=128, q_lora_rank=1536, kv_lora_rank=512,
      qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, num_routed_experts=256, num_shared_experts=1,
      top_k=8, expert_ffn_dim=2048, dense_ffn_dim=18432, vocab_size=153600, routed_scaling_factor=2.5,
      max_seq_len=4096, dtype="bfloat16",
  )
  cfg.data.update(tokenizer="bpe", bpe_vocab_size=153600)
  cfg.train.update(batch_size=1536, seq_len=4096, learning_rate=3e-4, warmup_steps=2000, steps=100000)
  cfg.parallel.update(data=48, expert=4, tensor=8, stage=16, virtual_stages=2, hier_a2a=True, tp_extend_ep=True,
                      remat="fine")
  return cfg
