"""The Pangu config: schema, defaults and validation, in one place.

A config has four sections: `model`, `data`, `train`, `parallel` (names fixed by
docs/contracts.md). Preset files under `configs/pangu/` start from `base_config()`
and change what differs, so every preset carries every field and the schema
below is the single statement of what each field may hold.
"""

from __future__ import annotations

import ml_collections

from confspec import ConfigError, Field, validate

_POS = dict(lo=1)

MODEL_SCHEMA = {
    "num_layers": Field(int, **_POS, doc="transformer layers L (MTP layers not counted)"),
    "num_dense_layers": Field(int, lo=0, doc="first layers with a dense FFN instead of MoE"),
    "hidden_size": Field(int, **_POS),
    "num_heads": Field(int, **_POS),
    "q_lora_rank": Field(int, lo=0, doc="0 = no query compression"),
    "kv_lora_rank": Field(int, **_POS),
    "qk_nope_head_dim": Field(int, **_POS),
    "qk_rope_head_dim": Field(int, lo=2),
    "v_head_dim": Field(int, **_POS),
    "num_routed_experts": Field(int, **_POS),
    "num_shared_experts": Field(int, lo=0),
    "top_k": Field(int, **_POS),
    "expert_ffn_dim": Field(int, **_POS),
    "dense_ffn_dim": Field(int, **_POS),
    "vocab_size": Field(int, lo=2),
    "router_score": Field(str, choices=("sigmoid", "softmax")),
    "router_bias": Field(bool, doc="per-expert selection bias (aux-loss-free balancing)"),
    "norm_topk_prob": Field(bool),
    "routed_scaling_factor": Field(float, lo=0, lo_open=True),
    "moe_impl": Field(str, choices=("dense", "capacity", "dropless")),
    "capacity_factor": Field(float, lo=0, lo_open=True),
    "gmm_block_size": Field(int, lo=8, doc="token block of the CPU grouped matmul (dropless)"),
    "gmm_impl": Field(str, choices=("auto", "blocked", "scanned", "ragged"),
                      doc="grouped matmul: auto = blocked on CPU, ragged_dot elsewhere"),
    "mtp_depth": Field(int, lo=0, hi=8),
    "sandwich_norm": Field(bool, doc="depth-scaled sandwich norm (else pre-norm)"),
    "tiny_init": Field(bool, doc="TinyInit (else N(0, init_std))"),
    "init_std": Field(float, lo=0, lo_open=True, doc="std of the standard (non-Tiny) init"),
    "dssn_c_attn": Field(float, lo=0, lo_open=True),
    "dssn_c_mlp": Field(float, lo=0, lo_open=True),
    "norm_eps": Field(float, lo=0, lo_open=True, hi=0.1),
    "rope_theta": Field(float, lo=1),
    "max_seq_len": Field(int, **_POS),
    "dtype": Field(str, choices=("float32", "bfloat16"), doc="compute dtype"),
    "param_dtype": Field(str, choices=("float32", "bfloat16"), doc="master weight dtype"),
}

DATA_SCHEMA = {
    "path": Field(str, doc="text file or directory; empty = the embedded corpus"),
    "tokenizer": Field(str, choices=("byte", "bpe")),
    "bpe_vocab_size": Field(int, lo=260),
    "val_fraction": Field(float, lo=0, lo_open=True, hi=0.5),
    "max_bytes": Field(int, lo=0, doc="cap on corpus bytes read (0 = no cap)"),
}

TRAIN_SCHEMA = {
    "steps": Field(int, **_POS),
    "batch_size": Field(int, **_POS),
    "seq_len": Field(int, lo=2),
    "learning_rate": Field(float, lo=0, lo_open=True, hi=1.0),
    "min_lr_ratio": Field(float, lo=0, hi=1),
    "warmup_steps": Field(int, lo=0),
    "weight_decay": Field(float, lo=0),
    "b1": Field(float, lo=0, hi=1),
    "b2": Field(float, lo=0, hi=1),
    "grad_clip": Field(float, lo=0, lo_open=True),
    "checkpoint_every": Field(int, **_POS),
    "keep_checkpoints": Field(int, **_POS),
    "eval_every": Field(int, **_POS),
    "eval_batches": Field(int, **_POS),
    "log_every": Field(int, **_POS),
    "seed": Field(int, lo=0),
    "aux_loss_alpha": Field(float, lo=0),
    "aux_loss_granularity": Field(str, choices=("micro_batch", "ep_group", "global_batch")),
    "ep_group_size": Field(int, **_POS, doc="sequences per EP group on one device"),
    "mtp_loss_weight": Field(float, lo=0),
    "z_loss_weight": Field(float, lo=0),
    "bias_update_rate": Field(float, lo=0, doc="aux-loss-free bias step (0 = off)"),
    "max_consecutive_skips": Field(int, **_POS),
    "time_budget_s": Field(float, lo=0, doc="stop after this many seconds (0 = no limit)"),
}

PARALLEL_SCHEMA = {
    "data": Field(int, **_POS),
    "expert": Field(int, **_POS),
    "tensor": Field(int, **_POS),
    "stage": Field(int, **_POS),
    "virtual_stages": Field(int, **_POS),
    "hier_a2a": Field(bool),
    "tp_extend_ep": Field(bool),
    "remat": Field(str, choices=("none", "full", "fine", "offload")),
    "devices_per_node": Field(int, **_POS),
    "placement_every": Field(int, lo=0, doc="re-place experts across EP devices every N steps (0 = off)"),
    "placement_theta": Field(float, lo=0, hi=1, doc="EMA factor of the expert-load predictor"),
    "placement_min_gain": Field(float, lo=0, doc="re-place only if the device-load CV drops by at least this"),
    "pipeline_microbatches": Field(int, **_POS, doc="micro-batches per step with stage > 1"),
}

SCHEMA = {"model": MODEL_SCHEMA, "data": DATA_SCHEMA, "train": TRAIN_SCHEMA, "parallel": PARALLEL_SCHEMA}


def base_config() -> ml_collections.ConfigDict:
  """Every field with its default: the tiny model, trainable on a 2-core CPU."""
  model = dict(
      num_layers=4,
      num_dense_layers=1,
      hidden_size=128,
      num_heads=4,
      q_lora_rank=64,
      kv_lora_rank=32,
      qk_nope_head_dim=32,
      qk_rope_head_dim=16,
      v_head_dim=32,
      num_routed_experts=8,
      num_shared_experts=1,
      top_k=2,
      expert_ffn_dim=128,
      dense_ffn_dim=384,
      vocab_size=256,
      router_score="sigmoid",
      router_bias=True,
      norm_topk_prob=True,
      routed_scaling_factor=1.0,
      moe_impl="dropless",
      capacity_factor=1.25,
      gmm_block_size=64,
      gmm_impl="auto",
      mtp_depth=1,
      sandwich_norm=True,
      tiny_init=True,
      init_std=0.02,
      # Pangu Ultra's measured sub-layer output stds (d=12288, L=94); Ultra MoE's are unpublished.
      dssn_c_attn=0.283,
      dssn_c_mlp=0.432,
      norm_eps=1e-5,
      rope_theta=10000.0,
      max_seq_len=4096,
      dtype="float32",
      param_dtype="float32",
  )
  data = dict(path="", tokenizer="byte", bpe_vocab_size=1024, val_fraction=0.05, max_bytes=0)
  train = dict(
      steps=1200,
      batch_size=16,
      seq_len=128,
      learning_rate=3e-3,
      min_lr_ratio=0.1,
      warmup_steps=100,
      weight_decay=0.1,
      b1=0.9,
      b2=0.95,
      grad_clip=1.0,
      checkpoint_every=200,
      keep_checkpoints=3,
      eval_every=200,
      eval_batches=8,
      log_every=10,
      seed=0,
      aux_loss_alpha=1e-2,
      aux_loss_granularity="ep_group",
      ep_group_size=4,
      mtp_loss_weight=0.3,
      z_loss_weight=0.0,
      bias_update_rate=0.0,
      max_consecutive_skips=5,
      time_budget_s=0.0,
  )
  parallel = dict(
      data=1, expert=1, tensor=1, stage=1, virtual_stages=1, hier_a2a=True, tp_extend_ep=False,
      remat="none", devices_per_node=8, placement_every=0, placement_theta=0.9, placement_min_gain=0.08,
      pipeline_microbatches=4,
  )
  return ml_collections.ConfigDict(dict(model=model, data=data, train=train, parallel=parallel))


def _cross_checks(cfg) -> None:
  m = cfg.model
  if m.num_dense_layers > m.num_layers:
    raise ConfigError(
        f"config.model.num_dense_layers: {m.num_dense_layers} is out of range; allowed: 0..num_layers ({m.num_layers})")
  if m.top_k > m.num_routed_experts:
    raise ConfigError(
        f"config.model.top_k: {m.top_k} is out of range; allowed: 1..num_routed_experts ({m.num_routed_experts})")
  if m.qk_rope_head_dim % 2:
    raise ConfigError(f"config.model.qk_rope_head_dim: {m.qk_rope_head_dim} must be even; allowed: even integer >= 2")
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
  return validate(model_cfg, MODEL_SCHEMA, root="config.model")
