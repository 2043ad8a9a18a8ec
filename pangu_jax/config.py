"""The Pangu config: every field declared once (kind, default, range, meaning), and validation.

A config has four sections: `model`, `data`, `train`, `parallel` (names fixed by
docs/contracts.md). The schema below is the single statement of each field: its
default (`base_config()` is built from it: the tiny model, trainable on a 2-core
CPU), what it may hold and what it means. Preset files under `configs/pangu/`
start from `base_config()` and change what differs, so every preset carries
every field.
"""

from __future__ import annotations

import ml_collections

from confspec import ConfigError, Field, defaults, validate

MODEL_SCHEMA = {
    "num_layers": Field(int, 4, lo=1, doc="transformer layers L (MTP layers not counted)"),
    "num_dense_layers": Field(int, 1, lo=0, doc="first layers with a dense FFN instead of MoE"),
    "hidden_size": Field(int, 128, lo=1),
    "num_heads": Field(int, 4, lo=1),
    "attention": Field(str, "mla", choices=("mla", "gqa"), doc="attention: mla = multi-head latent attention "
                       "(DeepSeek-V3's, the q_lora / kv_lora / qk_* / v_head_dim fields); gqa = grouped-query "
                       "attention (num_kv_heads, head_dim)"),
    "num_kv_heads": Field(int, 2, lo=1, doc="gqa: key/value heads (must divide num_heads; = num_heads is MHA)"),
    "head_dim": Field(int, 32, lo=2, doc="gqa: per-head dim of q, k and v (even: RoPE rotates all of it)"),
    "q_lora_rank": Field(int, 64, lo=0, doc="0 = no query compression"),
    "kv_lora_rank": Field(int, 32, lo=1),
    "qk_nope_head_dim": Field(int, 32, lo=1),
    "qk_rope_head_dim": Field(int, 16, lo=2),
    "v_head_dim": Field(int, 32, lo=1),
    "num_routed_experts": Field(int, 8, lo=1),
    "num_shared_experts": Field(int, 1, lo=0),
    "top_k": Field(int, 2, lo=1),
    "expert_groups": Field(int, 1, lo=1, doc="group-limited routing: the routed experts form this many equal groups "
                           "(DeepSeek-V3 n_group; 1 = no grouping)"),
    "topk_groups": Field(int, 1, lo=1, doc="group-limited routing: experts are chosen only from the best this many "
                         "groups, a group scored by the sum of its two best biased scores (DeepSeek-V3 topk_group)"),
    "expert_ffn_dim": Field(int, 128, lo=1),
    "dense_ffn_dim": Field(int, 384, lo=1),
    "vocab_size": Field(int, 256, lo=2),
    "router_score": Field(str, "sigmoid", choices=("sigmoid", "softmax")),
    "router_bias": Field(bool, True, doc="per-expert selection bias (aux-loss-free balancing)"),
    "norm_topk_prob": Field(bool, True),
    "routed_scaling_factor": Field(float, 1.0, lo=0, lo_open=True),
    "moe_impl": Field(str, "dropless", choices=("dense", "capacity", "dropless")),
    "capacity_factor": Field(float, 1.25, lo=0, lo_open=True),
    "gmm_block_size": Field(int, 64, lo=8, doc="token block of the CPU grouped matmul (dropless)"),
    "gmm_impl": Field(str, "auto", choices=("auto", "blocked", "scanned", "ragged"),
                      doc="grouped matmul: auto = blocked on CPU, ragged_dot elsewhere"),
    "mtp_depth": Field(int, 1, lo=0, hi=8),
    "sandwich_norm": Field(bool, True, doc="depth-scaled sandwich norm (else pre-norm)"),
    "tiny_init": Field(bool, True, doc="TinyInit (else N(0, init_std))"),
    "init_std": Field(float, 0.02, lo=0, lo_open=True, doc="std of the standard (non-Tiny) init"),
    # Pangu Ultra's measured sub-layer output stds (d=12288, L=94); Ultra MoE's are unpublished.
    "dssn_c_attn": Field(float, 0.283, lo=0, lo_open=True),
    "dssn_c_mlp": Field(float, 0.432, lo=0, lo_open=True),
    "norm_eps": Field(float, 1e-5, lo=0, lo_open=True, hi=0.1),
    "rope_theta": Field(float, 10000.0, lo=1),
    "rope_scaling": Field(str, "none", choices=("none", "yarn"), doc="RoPE context extension (yarn: YaRN as "
                          "DeepSeek-V3's rope_scaling declares it, with the softmax-scale correction)"),
    "rope_factor": Field(float, 1.0, lo=1, doc="YaRN: context extension factor s"),
    "rope_original_max_len": Field(int, 4096, lo=1, doc="YaRN: the pre-training context length"),
    "rope_beta_fast": Field(float, 32.0, lo=0, lo_open=True, doc="YaRN: rotations where extrapolation ends"),
    "rope_beta_slow": Field(float, 1.0, lo=0, lo_open=True, doc="YaRN: rotations where interpolation begins"),
    "rope_mscale": Field(float, 1.0, lo=0, doc="YaRN: mscale (cos/sin scaled by m(s, mscale) / m(s, mscale_all_dim))"),
    "rope_mscale_all_dim": Field(float, 0.0, lo=0, doc="YaRN: mscale_all_dim (softmax scale times m(s, .)^2; "
                                 "0 = cos/sin scaled by m(s, 1) instead)"),
    "max_seq_len": Field(int, 4096, lo=1),
    "dtype": Field(str, "float32", choices=("float32", "bfloat16"), doc="compute dtype"),
    "param_dtype": Field(str, "float32", choices=("float32", "bfloat16"), doc="master weight dtype"),
}

DATA_SCHEMA = {
    "path": Field(str, "", doc="corpus: a text file or directory, .jsonl, .parquet, or a datasets save_to_disk "
                  "directory; empty = the embedded corpus (pangu_jax.train.sources)"),
    "format": Field(str, "auto", choices=("auto", "text", "jsonl", "parquet", "hf_disk"),
                    doc="corpus format (auto: from the path)"),
    "text_field": Field(str, "text", doc="the text field of a JSON lines record or a Parquet / datasets row"),
    "tokenizer": Field(str, "byte", choices=("byte", "bpe"),
                       doc="byte, or bpe: tokenizer_path if set, else a byte-level BPE trained on the training split"),
    "tokenizer_path": Field(str, "", doc="a tokenizers JSON file (tokenizer.json) to use with tokenizer='bpe'"),
    "bpe_vocab_size": Field(int, 1024, lo=260, doc="vocabulary of a BPE trained here (<= model.vocab_size)"),
    "val_fraction": Field(float, 0.05, lo=0, lo_open=True, hi=0.5),
    "max_bytes": Field(int, 0, lo=0, doc="cap on corpus bytes read (0 = no cap)"),
}

TRAIN_SCHEMA = {
    "steps": Field(int, 1200, lo=1),
    "batch_size": Field(int, 16, lo=1),
    "seq_len": Field(int, 128, lo=2),
    "learning_rate": Field(float, 3e-3, lo=0, lo_open=True, hi=1.0),
    "min_lr_ratio": Field(float, 0.1, lo=0, hi=1),
    "warmup_steps": Field(int, 100, lo=0),
    "weight_decay": Field(float, 0.1, lo=0),
    "b1": Field(float, 0.9, lo=0, hi=1),
    "b2": Field(float, 0.95, lo=0, hi=1),
    "grad_clip": Field(float, 1.0, lo=0, lo_open=True),
    "checkpoint_every": Field(int, 200, lo=1),
    "keep_checkpoints": Field(int, 3, lo=1),
    "eval_every": Field(int, 200, lo=1),
    "eval_batches": Field(int, 8, lo=1),
    "log_every": Field(int, 10, lo=1),
    "seed": Field(int, 0, lo=0),
    "aux_loss_alpha": Field(float, 1e-2, lo=0),
    "aux_loss_granularity": Field(str, "ep_group", choices=("micro_batch", "ep_group", "global_batch")),
    "ep_group_size": Field(int, 4, lo=1, doc="sequences per EP group on one device"),
    "mtp_loss_weight": Field(float, 0.3, lo=0),
    "z_loss_weight": Field(float, 0.0, lo=0),
    "bias_update_rate": Field(float, 0.0, lo=0, doc="aux-loss-free bias step (0 = off)"),
    "max_consecutive_skips": Field(int, 5, lo=1),
    "time_budget_s": Field(float, 0.0, lo=0, doc="stop after this many seconds (0 = no limit)"),
}

PARALLEL_SCHEMA = {
    "data": Field(int, 1, lo=1),
    "expert": Field(int, 1, lo=1),
    "tensor": Field(int, 1, lo=1),
    "stage": Field(int, 1, lo=1),
    "virtual_stages": Field(int, 1, lo=1),
    "hier_a2a": Field(bool, True),
    "tp_extend_ep": Field(bool, False),
    "remat": Field(str, "none", choices=("none", "full", "fine", "offload")),
    "devices_per_node": Field(int, 8, lo=1),
    "placement_every": Field(int, 0, lo=0, doc="re-place experts across EP devices every N steps (0 = off)"),
    "placement_theta": Field(float, 0.9, lo=0, hi=1, doc="EMA factor of the expert-load predictor"),
    "placement_min_gain": Field(float, 0.08, lo=0, doc="re-place only if the device-load CV drops by at least this"),
    "pipeline_microbatches": Field(int, 4, lo=1, doc="micro-batches per step with stage > 1"),
}

SCHEMA = {"model": MODEL_SCHEMA, "data": DATA_SCHEMA, "train": TRAIN_SCHEMA, "parallel": PARALLEL_SCHEMA}


def base_config() -> ml_collections.ConfigDict:
  """Every field with its declared default: the tiny model, trainable on a 2-core CPU."""
  return defaults(SCHEMA)


def _attention_checks(m) -> None:
  """The GQA fields (only read when `attention="gqa"`)."""
  if m.attention != "gqa":
    return
  if m.num_heads % m.num_kv_heads:
    divisors = ", ".join(str(d) for d in range(1, m.num_heads + 1) if m.num_heads % d == 0)
    raise ConfigError(f"config.model.num_kv_heads: {m.num_kv_heads} must divide model.num_heads ({m.num_heads}); "
                      f"allowed: {divisors}")
  if m.head_dim % 2:
    raise ConfigError(f"config.model.head_dim: {m.head_dim} must be even; allowed: even integer >= 2")


def _cross_checks(cfg) -> None:
  m = cfg.model
  if m.num_dense_layers > m.num_layers:
    raise ConfigError(
        f"config.model.num_dense_layers: {m.num_dense_layers} is out of range; allowed: 0..num_layers ({m.num_layers})")
  if m.top_k > m.num_routed_experts:
    raise ConfigError(
        f"config.model.top_k: {m.top_k} is out of range; allowed: 1..num_routed_experts ({m.num_routed_experts})")
  if m.num_routed_experts % m.expert_groups:
    raise ConfigError(f"config.model.expert_groups: {m.expert_groups} must divide model.num_routed_experts "
                      f"({m.num_routed_experts})")
  if m.topk_groups > m.expert_groups:
    raise ConfigError(f"config.model.topk_groups: {m.topk_groups} is out of range; allowed: "
                      f"1..model.expert_groups ({m.expert_groups})")
  per_group = m.num_routed_experts // m.expert_groups
  if m.expert_groups > 1 and per_group < 2:
    raise ConfigError(f"config.model.expert_groups: {m.expert_groups} leaves {per_group} expert per group; "
                      "allowed: at least 2 per group (a group is scored by its two best experts)")
  if m.top_k > m.topk_groups * per_group:
    raise ConfigError(f"config.model.top_k: {m.top_k} is out of range; allowed: 1..topk_groups x experts per group "
                      f"({m.topk_groups * per_group})")
  if m.qk_rope_head_dim % 2:
    raise ConfigError(f"config.model.qk_rope_head_dim: {m.qk_rope_head_dim} must be even; allowed: even integer >= 2")
  _attention_checks(m)
  t = cfg.train
  if t.seq_len > m.max_seq_len:
    raise ConfigError(
        f"config.train.seq_len: {t.seq_len} is out of range; allowed: 2..model.max_seq_len ({m.max_seq_len})")
  if t.aux_loss_granularity == "ep_group" and t.batch_size % t.ep_group_size:
    raise ConfigError(
        f"config.train.ep_group_size: {t.ep_group_size} must divide train.batch_size ({t.batch_size})")
  if cfg.data.tokenizer == "byte" and m.vocab_size < 256:
    raise ConfigError(
        f"config.model.vocab_size: {m.vocab_size} is out of range; allowed: >= 256 with the byte tokenizer")


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A config saved by an older version (e.g. a workdir's config.json) with fields added since then at their
  defaults, so that old runs stay loadable; unknown fields still fail validation."""
  cfg = base_config()
  for section, values in saved.items():
    if section in cfg and isinstance(values, dict):
      cfg[section].update(values)
    else:
      cfg[section] = values
  return cfg


def validate_config(cfg):
  """Validates a whole Pangu config (schema, then cross-field checks)."""
  return validate(cfg, SCHEMA, checks=(_cross_checks,))


def validate_model(model_cfg):
  """Validates only a `config.model` section (for library use without a trainer)."""
  return validate(model_cfg, MODEL_SCHEMA, checks=(_attention_checks,), root="config.model")
