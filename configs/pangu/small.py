"""Small Pangu MoE: between tiny and full (8 layers, d=512, 16 experts top-4 + 1 shared)."""

from pangu_jax.config import base_config


def get_config():
  cfg = base_config()
  cfg.model.update(
      num_layers=8, num_dense_layers=1, hidden_size=512, num_heads=8, q_lora_rank=192, kv_lora_rank=128,
      qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, num_routed_experts=16, num_shared_experts=1,
      top_k=4, expert_ffn_dim=256, dense_ffn_dim=1536,
  )
  cfg.train.update(batch_size=16, seq_len=256, learning_rate=1.5e-3)
  return cfg
