"""DeepSeek-V3 (671B total, 37B activated) as its technical report and its Hugging Face config.json declare it,
for the simulator's published-run development set (configs/published/runs.json).

61 layers (3 dense + 58 MoE), d=7168, 128 heads, MLA (q_lora 1536, kv_lora 512, qk_nope 128, qk_rope 64, v 128),
256 routed experts top-8 in 8 groups (top-4 groups) + 1 shared, expert width 2048, dense FFN 18432, vocab 129,280,
one MTP module, pre-norm (no sandwich norm), sigmoid router with selection bias, routed scaling 2.5. Pre-training
context 4096 (the report; YaRN extension came later and is not modelled here).
"""

from pangu_jax.config import base_config


def get_config():
  cfg = base_config()
  cfg.model.update(
      num_layers=61, num_dense_layers=3, hidden_size=7168, num_heads=128, q_lora_rank=1536, kv_lora_rank=512,
      qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, num_routed_experts=256, num_shared_experts=1,
      top_k=8, expert_groups=8, topk_groups=4, expert_ffn_dim=2048, dense_ffn_dim=18432, vocab_size=129280,
      routed_scaling_factor=2.5, mtp_depth=1, sandwich_norm=False, tiny_init=False, max_seq_len=4096,
      dtype="bfloat16",
  )
  cfg.data.update(tokenizer="bpe", bpe_vocab_size=129280)
  # the report's plan: 2048 H800, PP16 (DualPipe), EP64 over 8 nodes, ZeRO-1 data parallelism, no TP
  cfg.train.update(batch_size=15360, seq_len=4096, steps=100000)
  cfg.parallel.update(data=128, expert=64, tensor=1, stage=16, virtual_stages=1, hier_a2a=True, tp_extend_ep=False,
                      remat="fine")
  return cfg
