"""Hugging Face checkpoints in and out: DeepSeek-V3 and openPangu Ultra MoE directories <-> our config and params.

A Hugging Face model directory holds `config.json`, the weights as `model.safetensors` or as shards named by
`model.safetensors.index.json`, and perhaps tokenizer files. Two layouts are read and written:

  deepseek_v3      `model_type: deepseek_v3` (transformers' `DeepseekV3ForCausalLM`, vLLM's DeepSeek code): pre-norm
                   blocks; what a model with `sandwich_norm=False` exports to.
  pangu_ultra_moe  the openPangu Ultra MoE layout (vLLM's openPangu code, `PanguUltraMoEForCausalLM`): the same
                   names plus `sandwich_norm: true` and the four block norms; what a sandwich-norm model exports to.

Our definitions (the field and name tables, and what is not supported, are in docs/hf_checkpoints.md):
- Names. Layer i of the checkpoint is our dense layers then our MoE layers in order; MTP depth j is layer
  num_layers + j, as DeepSeek-V3 checkpoints number it. A pre-norm block's norms are `input_layernorm` and
  `post_attention_layernorm` (the pre-MLP norm); a sandwich block's are `input_layernorm`,
  `post_attention_layernorm` (on the attention output), `pre_mlp_layernorm` and `post_mlp_layernorm`, as vLLM's
  openPangu code names them. A JAX kernel (in, out) is a torch Linear weight (out, in); our fused SwiGLU input
  weight (d, 2F) is `gate_proj` (first F) and `up_proj` (last F).
- MTP. DeepSeek's MTP projection reads [RMSNorm(embedding); RMSNorm(hidden)]; ours reads [hidden; embedding], so
  `eh_proj`'s two column halves are swapped on the way in and out. MTP layers also carry `embed_tokens` and
  `shared_head.head` copies of the main embedding and head: written on export, ignored on import (we share them).
- RoPE. Our rotary layout is 'half' (rotate_half); DeepSeek-V3 checkpoints use interleaved pairs
  (`rope_interleave: true`, transformers' default for deepseek_v3 and what vLLM assumes). The rotary rows of
  `q_b_proj` / `q_proj` (per head) and of `kv_a_proj_with_mqa` are permuted: de-interleaved on import, interleaved
  on export unless asked for the half layout. The permutation is exact, so a round trip is bit-equal.
- FP8. A `float8_e4m3fn` weight W with `W_scale_inv` (one float32 per block of `weight_block_size`, 128 x 128 in
  DeepSeek-V3) is dequantised on import as W * scale_inv (each block times its scale).
- Router. A DeepSeek-V3 router always has its selection bias (`e_score_correction_bias`); an openPangu router
  has it when `router_enable_expert_bias` is true. Exported models without a bias write zeros.

Import streams: shards are read one at a time (memory-mapped; one tensor materialised at a time) into the
preallocated parameter arrays, so peak memory is the parameters plus one tensor (benchmarks/hf_import_memory.py
measures it). Every mistake in the directory (a missing `config.json` or shard, an index naming a missing file, a
truncated shard, a field we cannot honour, a tensor whose shape does not match the config, a missing or
unexpected tensor) is one line (`HFCheckpointError`, a `ConfigError`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Iterator

import numpy as np

from confspec import ConfigError

LAYOUTS = ("deepseek_v3", "pangu_ultra_moe")
ARCHITECTURES = {"deepseek_v3": "DeepseekV3ForCausalLM", "pangu_ultra_moe": "PanguUltraMoEForCausalLM"}
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "generation_config.json")
DEFAULT_SHARD_BYTES = 5 * 2**30

# config.json fields read into our model config: HF name -> (our field, default when absent; REQUIRED = must be
# present). `None` in the file means "absent" too (q_lora_rank: null is DeepSeek's "no query compression").
REQUIRED = object()
FIELDS = {
    "num_hidden_layers": ("num_layers", REQUIRED),
    "first_k_dense_replace": ("num_dense_layers", 0),
    "hidden_size": ("hidden_size", REQUIRED),
    "num_attention_heads": ("num_heads", REQUIRED),
    "q_lora_rank": ("q_lora_rank", 0),
    "kv_lora_rank": ("kv_lora_rank", REQUIRED),
    "qk_nope_head_dim": ("qk_nope_head_dim", REQUIRED),
    "qk_rope_head_dim": ("qk_rope_head_dim", REQUIRED),
    "v_head_dim": ("v_head_dim", REQUIRED),
    "n_routed_experts": ("num_routed_experts", REQUIRED),
    "n_shared_experts": ("num_shared_experts", 0),
    "num_experts_per_tok": ("top_k", REQUIRED),
    "moe_intermediate_size": ("expert_ffn_dim", REQUIRED),
    "intermediate_size": ("dense_ffn_dim", REQUIRED),
    "vocab_size": ("vocab_size", REQUIRED),
    "norm_topk_prob": ("norm_topk_prob", True),
    "routed_scaling_factor": ("routed_scaling_factor", 1.0),
    "n_group": ("expert_groups", 1),
    "topk_group": ("topk_groups", 1),
    "num_nextn_predict_layers": ("mtp_depth", 0),
    "rms_norm_eps": ("norm_eps", 1e-6),
    "max_position_embeddings": ("max_seq_len", REQUIRED),
}
# Fields whose values we check (a value we cannot honour stops the import) or that carry no model mathematics.
MUST = {"hidden_act": ("silu",), "attention_bias": (False, None), "moe_layer_freq": (1, None),
        "tie_word_embeddings": (False, None), "scoring_func": ("sigmoid", None),
        "topk_method": ("noaux_tc", "greedy", None), "mlp_bias": (False, None), "use_mhc": (False, None),
        "use_mome": (False, None), "param_sink_number": (0, None), "pretraining_tp": (1, None),
        "attention_dropout": (0, 0.0, None)}
ABSENT = ("index_topk", "sliding_window", "sliding_window_list", "block_post_layernorm_idx")
IGNORED = {"architectures", "model_type", "auto_map", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype",
           "dtype", "initializer_range", "use_cache", "transformers_version", "output_router_logits",
           "router_aux_loss_coef", "aux_loss_alpha", "seq_aux", "ep_size", "num_key_value_heads", "qk_head_dim",
           "head_dim", "rope_interleave", "rope_theta", "rope_scaling", "rope_parameters", "quantization_config",
           "sandwich_norm", "router_enable_expert_bias", "num_mtp_layers", "_name_or_path", "name_or_path",
           "return_dict", "id2label", "label2id", "is_encoder_decoder", "tokenizer_class"}


class HFCheckpointError(ConfigError):
  """A Hugging Face directory we cannot read as asked (one line)."""


def _torch():
  from runkit.torch_guard import guard_torch_import  # noqa: PLC0415

  guard_torch_import()  # a torch_npu without CANN must not break `import torch` (runkit.torch_guard)
  import torch  # noqa: PLC0415

  return torch


# ----------------------------------------------------------------------------- config.json <-> our model config


def read_hf_config(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.isdir(hf_dir):
    raise HFCheckpointError(f"--hf_dir: {hf_dir} is not a directory")
  if not os.path.exists(path):
    raise HFCheckpointError(f"--hf_dir: {hf_dir} has no config.json (not a Hugging Face model directory)")
  try:
    with open(path) as f:
      hf = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise HFCheckpointError(f"{path}: not readable as JSON ({e})") from None
  if not isinstance(hf, dict):
    raise HFCheckpointError(f"{path}: not a JSON object")
  return hf


@dataclasses.dataclass(frozen=True)
class HFFormat:
  """What a checkpoint's layout declares beyond our model config."""

  layout: str  # "deepseek_v3" or "pangu_ultra_moe"
  rope_interleave: bool
  fp8_block: tuple[int, int] | None  # the FP8 weight block, None if not quantised
  dtype: str  # the checkpoint's declared dtype ("bfloat16", "float32", ...)


def _rope_fields(hf: dict) -> dict:
  """Our rope_* fields from config.json's `rope_scaling` (DeepSeek-V3) or `rope_parameters` (transformers 5)."""
  rp = hf.get("rope_parameters") or {}
  theta = hf.get("rope_theta", rp.get("rope_theta", 10000.0))
  rs = hf.get("rope_scaling") or (rp if rp.get("rope_type", "default") != "default" else None)
  out = {"rope_theta": float(theta)}
  if not rs:
    return out
  kind = rs.get("rope_type", rs.get("type"))
  if kind not in ("yarn", "deepseek_yarn"):
    raise HFCheckpointError(f"config.json: rope_scaling type {kind!r} is not supported; allowed: yarn")
  factor = rs.get("factor")
  if factor is None:
    factor = hf["max_position_embeddings"] / rs["original_max_position_embeddings"]
  if rs.get("attention_factor") is not None:
    raise HFCheckpointError("config.json: rope_scaling.attention_factor is not supported (set mscale / "
                            "mscale_all_dim instead)")
  if rs.get("truncate", True) is not True:
    raise HFCheckpointError("config.json: rope_scaling.truncate=false is not supported")
  if "original_max_position_embeddings" not in rs:
    raise HFCheckpointError("config.json: rope_scaling needs original_max_position_embeddings")
  out.update(rope_scaling="yarn", rope_factor=float(factor),
             rope_original_max_len=int(rs["original_max_position_embeddings"]),
             rope_beta_fast=float(rs.get("beta_fast") or 32), rope_beta_slow=float(rs.get("beta_slow") or 1),
             rope_mscale=float(rs.get("mscale") or 0.0), rope_mscale_all_dim=float(rs.get("mscale_all_dim") or 0.0))
  if float(factor) <= 1:
    out["rope_scaling"] = "none"  # YaRN with s <= 1 changes nothing
  return out


def model_config_from_hf(hf: dict) -> tuple[dict, HFFormat]:
  """config.json -> (our `config.model` fields, HFFormat). A value we cannot honour raises one line naming it."""
  mt = hf.get("model_type")
  if mt not in LAYOUTS:
    raise HFCheckpointError(f"config.json: model_type {mt!r} is not supported; allowed: {', '.join(LAYOUTS)}")
  for key, allowed in MUST.items():
    if key in hf and hf[key] not in allowed:
      ok = " or ".join(json.dumps(a) for a in allowed if a is not None)
      raise HFCheckpointError(f"config.json: {key}={json.dumps(hf[key])} cannot be honoured; allowed: {ok}")
  for key in ABSENT:
    if hf.get(key):
      raise HFCheckpointError(f"config.json: {key} is not supported (a feature this model does not have)")
  heads, kv_heads = hf.get("num_attention_heads"), hf.get("num_key_value_heads")
  if kv_heads not in (None, heads):
    raise HFCheckpointError(f"config.json: num_key_value_heads={kv_heads} cannot be honoured; MLA needs "
                            f"num_attention_heads ({heads})")
  model = {}
  for key, (ours, default) in FIELDS.items():
    value = hf.get(key)
    if value is None:
      if default is REQUIRED:
        raise HFCheckpointError(f"config.json: {key} is missing")
      value = default
    model[ours] = value
  model.update(_rope_fields(hf))
  if model["num_dense_layers"] > model["num_layers"]:
    model["num_dense_layers"] = model["num_layers"]
  if model["mtp_depth"] and model["num_dense_layers"] >= model["num_layers"]:
    raise HFCheckpointError("config.json: MTP layers after an all-dense model cannot be honoured (our MTP block "
                            "takes the last layer's kind)")
  sandwich = bool(hf.get("sandwich_norm", False))
  if mt == "deepseek_v3" and sandwich:
    raise HFCheckpointError("config.json: sandwich_norm=true with model_type deepseek_v3; use model_type "
                            "pangu_ultra_moe")
  model["sandwich_norm"] = sandwich
  model["router_score"] = "sigmoid"
  if mt == "deepseek_v3":
    model["router_bias"] = hf.get("topk_method", "noaux_tc") == "noaux_tc" or "topk_method" not in hf
  else:
    model["router_bias"] = bool(hf.get("router_enable_expert_bias", False))
  q = hf.get("quantization_config")
  block = None
  if q:
    if q.get("quant_method") != "fp8" or q.get("fmt", "e4m3") != "e4m3":
      raise HFCheckpointError(f"config.json: quantization_config {json.dumps(q)} is not supported; allowed: "
                              "quant_method fp8, fmt e4m3 (block-quantised weights)")
    block = tuple(int(b) for b in q.get("weight_block_size") or (128, 128))
    if len(block) != 2:
      raise HFCheckpointError(f"config.json: quantization_config.weight_block_size {block} must have 2 entries")
  dtype = str(hf.get("torch_dtype") or hf.get("dtype") or "float32")
  interleave = bool(hf.get("rope_interleave", True))
  return model, HFFormat(layout=mt, rope_interleave=interleave, fp8_block=block, dtype=dtype)


def _check_mla(cfg_model, what: str) -> None:
  """Both layouts' attention is MLA: a GQA model is one line, before any work."""
  if getattr(cfg_model, "attention", "mla") != "mla":
    raise HFCheckpointError(f"config.model.attention={cfg_model.attention!r} cannot be {what} (the deepseek_v3 and "
                            "pangu_ultra_moe layouts have MLA attention only)")


def hf_config(cfg_model, *, rope_interleave: bool = True) -> dict:
  """Our model config -> config.json (deepseek_v3 without the sandwich norm, pangu_ultra_moe with it). A field the
  layout cannot express raises one line."""
  m = cfg_model
  layout = "pangu_ultra_moe" if m.sandwich_norm else "deepseek_v3"
  _check_mla(m, f"written as {layout}")
  if m.router_score != "sigmoid":
    raise HFCheckpointError(f"config.model.router_score={m.router_score!r} cannot be written as {layout} (its "
                            "routers are sigmoid)")
  if layout == "pangu_ultra_moe" and m.expert_groups > 1 and m.topk_groups < m.expert_groups:
    raise HFCheckpointError("config.model.expert_groups > 1 cannot be written as pangu_ultra_moe (vLLM's openPangu "
                            "code routes without groups)")
  out = {
      "architectures": [ARCHITECTURES[layout]], "model_type": layout,
      "vocab_size": m.vocab_size, "hidden_size": m.hidden_size, "intermediate_size": m.dense_ffn_dim,
      "moe_intermediate_size": m.expert_ffn_dim, "num_hidden_layers": m.num_layers,
      "num_attention_heads": m.num_heads, "num_key_value_heads": m.num_heads,
      "n_shared_experts": m.num_shared_experts, "n_routed_experts": m.num_routed_experts,
      "routed_scaling_factor": m.routed_scaling_factor, "kv_lora_rank": m.kv_lora_rank,
      "q_lora_rank": m.q_lora_rank or None, "qk_rope_head_dim": m.qk_rope_head_dim, "v_head_dim": m.v_head_dim,
      "qk_nope_head_dim": m.qk_nope_head_dim, "n_group": m.expert_groups, "topk_group": m.topk_groups,
      "num_experts_per_tok": m.top_k, "first_k_dense_replace": m.num_dense_layers, "norm_topk_prob": m.norm_topk_prob,
      "hidden_act": "silu", "max_position_embeddings": m.max_seq_len, "rms_norm_eps": m.norm_eps,
      "rope_theta": m.rope_theta, "rope_interleave": rope_interleave, "attention_bias": False,
      "tie_word_embeddings": False, "num_nextn_predict_layers": m.mtp_depth, "scoring_func": "sigmoid",
      "topk_method": "noaux_tc", "torch_dtype": m.param_dtype,
  }
  if layout == "pangu_ultra_moe":
    out.update(sandwich_norm=True, router_enable_expert_bias=bool(m.router_bias))
    del out["topk_method"]
  if m.rope_scaling == "yarn":
    out["rope_scaling"] = {"type": "yarn", "rope_type": "yarn", "factor": m.rope_factor,
                           "original_max_position_embeddings": m.rope_original_max_len, "beta_fast": m.rope_beta_fast,
                           "beta_slow": m.rope_beta_slow, "mscale": m.rope_mscale,
                           "mscale_all_dim": m.rope_mscale_all_dim}
  return out


# ----------------------------------------------------------------------------- the name table


@dataclasses.dataclass(frozen=True)
class Slot:
  """One checkpoint tensor and where it lives in our params: `path` (keys), `index` (leading indices: layer in its
  stack, then expert), `kind` (how the arrays correspond; see `_to_hf`)."""

  name: str
  path: tuple[str, ...]
  index: tuple[int, ...]
  kind: str  # copy | linear | gate | up | q_rope | kv_rope | eh | bias
  export_only: bool = False  # MTP copies of the embedding and head


ATTN = {"q_a": ("q_a_proj", "linear"), "q_b": ("q_b_proj", "q_rope"), "q": ("q_proj", "q_rope"),
        "kv_a": ("kv_a_proj_with_mqa", "kv_rope"), "kv_b": ("kv_b_proj", "linear"), "o": ("o_proj", "linear"),
        "q_a_norm": ("q_a_layernorm", "copy"), "kv_a_norm": ("kv_a_layernorm", "copy")}
# GQA attention (no HF directory: `hf_config` refuses it; these names are the exporter's torch-layout state_dict,
# Llama's, in our 'half' RoPE layout, which is also Llama's rotate_half).
ATTN_GQA = {"q": ("q_proj", "linear"), "k": ("k_proj", "linear"), "v": ("v_proj", "linear"), "o": ("o_proj", "linear")}


def block_norm_names(sandwich: bool) -> dict[str, str]:
  if sandwich:
    return {"attn_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
            "mlp_norm": "pre_mlp_layernorm", "post_mlp_norm": "post_mlp_layernorm"}
  return {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}


def _block_slots(shapes: dict, path: tuple, j: int, pre: str, sandwich: bool) -> Iterator[Slot]:
  for ours, theirs in block_norm_names(sandwich).items():
    yield Slot(f"{pre}{theirs}.weight", path + (ours,), (j,), "copy")
  table = ATTN_GQA if "k" in shapes["attn"] else ATTN
  for ours in shapes["attn"]:
    theirs, kind = table[ours]
    yield Slot(f"{pre}self_attn.{theirs}.weight", path + ("attn", ours), (j,), kind)

  def mlp(where, p, index):
    yield Slot(f"{where}gate_proj.weight", p + ("w_in",), index, "gate")
    yield Slot(f"{where}up_proj.weight", p + ("w_in",), index, "up")
    yield Slot(f"{where}down_proj.weight", p + ("w_out",), index, "linear")

  if "mlp" in shapes:
    yield from mlp(f"{pre}mlp.", path + ("mlp",), (j,))
    return
  m = shapes["moe"]
  yield Slot(f"{pre}mlp.gate.weight", path + ("moe", "router"), (j,), "linear")
  if "router_bias" in m:
    yield Slot(f"{pre}mlp.gate.e_score_correction_bias", path + ("moe", "router_bias"), (j,), "copy")
  else:  # written as zeros (transformers' router always has the buffer), never read
    yield Slot(f"{pre}mlp.gate.e_score_correction_bias", path + ("moe", "router"), (j,), "bias", export_only=True)
  for e in range(m["experts"]["w_in"].shape[1]):
    yield from mlp(f"{pre}mlp.experts.{e}.", path + ("moe", "experts"), (j, e))
  if "shared" in m:
    yield from mlp(f"{pre}mlp.shared_experts.", path + ("moe", "shared"), (j,))


def slots(shapes: dict, sandwich: bool) -> list[Slot]:
  """Every checkpoint tensor of a model whose parameter shapes are `shapes` (the tree of `init_params`), in
  checkpoint order."""
  out = [Slot("model.embed_tokens.weight", ("embed",), (), "copy")]
  i = 0
  for stack in ("dense_layers", "moe_layers"):
    if stack in shapes:
      for j in range(shapes[stack]["attn_norm"].shape[0]):
        out.extend(_block_slots(shapes[stack], (stack,), j, f"model.layers.{i}.", sandwich))
        i += 1
  out += [Slot("model.norm.weight", ("final_norm",), (), "copy"), Slot("lm_head.weight", ("head",), (), "linear")]
  if "mtp" in shapes:
    for j in range(shapes["mtp"]["proj"].shape[0]):
      pre = f"model.layers.{i + j}."
      out += [Slot(f"{pre}embed_tokens.weight", ("embed",), (), "copy", export_only=True),
              Slot(f"{pre}enorm.weight", ("mtp", "embed_norm"), (j,), "copy"),
              Slot(f"{pre}hnorm.weight", ("mtp", "hidden_norm"), (j,), "copy"),
              Slot(f"{pre}eh_proj.weight", ("mtp", "proj"), (j,), "eh")]
      out.extend(_block_slots(shapes["mtp"]["block"], ("mtp", "block"), j, pre, sandwich))
      out += [Slot(f"{pre}shared_head.norm.weight", ("mtp", "out_norm"), (j,), "copy"),
              Slot(f"{pre}shared_head.head.weight", ("head",), (), "linear", export_only=True)]
  return out


def rope_permutation(cfg_model, kind: str, interleave: bool) -> np.ndarray | None:
  """Row order p with ours[i] = theirs[p[i]] for a weight's output rows (None = identity): the rotary rows of
  each query head (`q_rope`) or of the shared rotary key (`kv_rope`), interleaved pairs -> [evens; odds]."""
  if not interleave:
    return None
  r = cfg_model.qk_rope_head_dim
  deint = np.concatenate([np.arange(0, r, 2), np.arange(1, r, 2)])
  if kind == "q_rope":
    qk = cfg_model.qk_nope_head_dim + r
    p = np.arange(cfg_model.num_heads * qk).reshape(cfg_model.num_heads, qk)
    p[:, cfg_model.qk_nope_head_dim:] = p[:, cfg_model.qk_nope_head_dim:][:, deint]
    return p.reshape(-1)
  p = np.arange(cfg_model.kv_lora_rank + r)
  p[cfg_model.kv_lora_rank:] = p[cfg_model.kv_lora_rank:][deint]
  return p


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _to_hf(a: np.ndarray, kind: str, perm) -> np.ndarray:
  """Our slice -> the checkpoint tensor."""
  if kind in ("copy", "bias"):
    return a
  if kind == "gate":
    return a[:, : a.shape[1] // 2].T
  if kind == "up":
    return a[:, a.shape[1] // 2:].T
  if kind == "eh":
    d = a.shape[1]
    return np.concatenate([a[d:], a[:d]]).T
  w = a.T
  if perm is not None:
    w = w[np.argsort(perm)]
  return w


def _hf_shape(shape: tuple, kind: str) -> tuple:
  if kind in ("copy", "bias"):
    return shape
  if kind in ("gate", "up"):
    return (shape[1] // 2, shape[0])
  return (shape[1], shape[0])


# ----------------------------------------------------------------------------- export


def hf_tensors(params, cfg_model, *, rope_interleave: bool = True) -> Iterator[tuple[str, np.ndarray]]:
  """(name, array) of every checkpoint tensor, in checkpoint order (C-contiguous; `param_dtype`, except the
  router bias, which stays float32)."""
  import ml_dtypes  # noqa: PLC0415

  shapes = _shape_tree(params)
  stack = shapes.get("moe_layers") or shapes.get("dense_layers")
  if rope_interleave and stack is not None and "k" in stack["attn"]:
    raise HFCheckpointError("a GQA model's weights have no interleaved-RoPE layout here (DeepSeek-V3's); use the "
                            "half layout (rope_interleave=False)")
  for s in slots(shapes, bool(cfg_model.sandwich_norm)):
    if s.kind == "bias":
      yield s.name, np.zeros((np.shape(_get(params, s.path))[-1],), np.float32)
      continue
    a = np.asarray(_get(params, s.path))[s.index]
    if s.path[-1] == "router" and cfg_model.param_dtype == "bfloat16":
      a = a.astype(ml_dtypes.bfloat16)  # as DeepSeek-V3 ships it: the gate in bf16, its bias in float32
    perm = rope_permutation(cfg_model, s.kind, rope_interleave) if s.kind.endswith("rope") else None
    w = _to_hf(a, s.kind, perm)
    # The MTP layers' copies of the embedding and head own their memory (safetensors refuses shared tensors).
    yield s.name, np.array(w, order="C", copy=True) if s.export_only else np.ascontiguousarray(w)


class _Shape:
  """A leaf stand-in with a shape (so `slots` can walk shapes and arrays alike)."""

  def __init__(self, shape):
    self.shape = tuple(shape)


def _shape_tree(tree):
  return {k: (_shape_tree(v) if isinstance(v, dict) else _Shape(np.shape(v))) for k, v in tree.items()}


def _to_torch(a: np.ndarray):
  """A torch tensor owning a copy of `a` (the MTP layers' embedding and head copies must not share memory with
  the main ones: safetensors refuses shared tensors in one file)."""
  torch = _torch()
  a = np.array(a, order="C", copy=True)
  if a.dtype.name == "bfloat16":
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(a)


def write_hf_dir(params, cfg_model, out_dir: str, *, rope_interleave: bool = True,
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES, tokenizer_dir: str | None = None, log=None) -> dict:
  """Writes a Hugging Face directory (config.json, weights sharded above `max_shard_bytes` with the index file,
  tokenizer files from `tokenizer_dir` if given); atomic: built beside `out_dir` and renamed into place. Returns
  {"layout", "tensors", "shards", "bytes"}."""
  from safetensors.torch import save_file  # noqa: PLC0415

  config = hf_config(cfg_model, rope_interleave=rope_interleave)
  # Plan the shards from the shapes alone, then compute and write one shard at a time.
  sizes = []
  for s in slots(_shape_tree(params), bool(cfg_model.sandwich_norm)):
    leaf = _get(params, s.path)
    shape = _hf_shape(np.shape(leaf)[len(s.index):], s.kind)
    itemsize = 4 if s.kind == "bias" or s.path[-1] == "router_bias" else 2 if (
        s.path[-1] == "router" and cfg_model.param_dtype == "bfloat16") else np.dtype(leaf.dtype).itemsize
    sizes.append((s.name, (shape[-1] if s.kind == "bias" else math.prod(shape)) * itemsize))
  shards, cur, cur_bytes = [], [], 0
  for name, nbytes in sizes:
    if cur and cur_bytes + nbytes > max_shard_bytes:
      shards.append(cur)
      cur, cur_bytes = [], 0
    cur.append(name)
    cur_bytes += nbytes
  shards.append(cur)
  names = [SINGLE] if len(shards) == 1 else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                                             for i in range(len(shards))]
  tmp = f"{out_dir.rstrip('/')}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  where = {n: f for f, group in zip(names, shards) for n in group}
  pending: dict[str, dict] = {f: {} for f in names}
  for name, arr in hf_tensors(params, cfg_model, rope_interleave=rope_interleave):
    f = where[name]
    pending[f][name] = _to_torch(arr)
    if len(pending[f]) == len(shards[names.index(f)]):
      save_file(pending.pop(f), os.path.join(tmp, f), metadata={"format": "pt"})
  total = sum(n for _, n in sizes)
  if len(names) > 1:
    with open(os.path.join(tmp, INDEX), "w") as fh:
      json.dump({"metadata": {"total_size": total}, "weight_map": where}, fh, indent=2)
  with open(os.path.join(tmp, "config.json"), "w") as fh:
    json.dump(config, fh, indent=2)
  if tokenizer_dir and os.path.isdir(tokenizer_dir):
    for f in TOKENIZER_FILES:
      if os.path.exists(os.path.join(tokenizer_dir, f)):
        shutil.copy2(os.path.join(tokenizer_dir, f), os.path.join(tmp, f))
  old = None
  if os.path.exists(out_dir):
    old = f"{out_dir.rstrip('/')}.old-{os.getpid()}"
    os.replace(out_dir, old)
  os.replace(tmp, out_dir)
  if old:
    shutil.rmtree(old, ignore_errors=True)
  if log:
    log(f"wrote {config['model_type']} checkpoint: {len(sizes)} tensors, {total / 2**20:.1f} MiB in "
        f"{len(names)} shard(s) to {out_dir}")
  return {"layout": config["model_type"], "tensors": len(sizes), "shards": len(names), "bytes": total}


# ----------------------------------------------------------------------------- import


class HFReader:
  """The weight files of a Hugging Face directory: one-line errors for a missing, truncated or unreadable shard."""

  def __init__(self, hf_dir: str):
    self.dir = hf_dir
    index = os.path.join(hf_dir, INDEX)
    if os.path.exists(index):
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
      except (OSError, ValueError, KeyError, TypeError) as e:
        raise HFCheckpointError(f"{index}: not a safetensors index ({e})") from None
      self.files = list(dict.fromkeys(weight_map.values()))
      self.where = dict(weight_map)
    elif os.path.exists(os.path.join(hf_dir, SINGLE)):
      self.files, self.where = [SINGLE], None
    else:
      raise HFCheckpointError(f"--hf_dir: {hf_dir} has neither {SINGLE} nor {INDEX}")
    for f in self.files:
      if not os.path.exists(os.path.join(hf_dir, f)):
        raise HFCheckpointError(f"{index}: names {f}, which is not in {hf_dir}")
    self._open = {}

  def _handle(self, f: str):
    if f not in self._open:
      from safetensors import safe_open  # noqa: PLC0415

      _torch()
      try:
        self._open[f] = safe_open(os.path.join(self.dir, f), framework="pt")
      except Exception as e:  # safetensors raises its own error types for a truncated or corrupt header
        raise HFCheckpointError(f"{os.path.join(self.dir, f)}: not a readable safetensors file ({e})") from None
    return self._open[f]

  def names(self, f: str) -> list[str]:
    names = list(self._handle(f).keys())
    if self.where is not None:
      names = [n for n in names if self.where.get(n) == f]
    return names

  def all_names(self) -> set[str]:
    if self.where is not None:
      return set(self.where)
    return set(self.names(SINGLE))

  def get(self, name: str, f: str | None = None):
    f = f or (self.where[name] if self.where is not None else SINGLE)
    try:
      return self._handle(f).get_tensor(name)
    except Exception as e:
      raise HFCheckpointError(f"{os.path.join(self.dir, f)}: tensor {name} is unreadable ({e}); the file may be "
                              "truncated") from None

  def close_file(self, f: str) -> None:
    self._open.pop(f, None)


def _to_numpy(t) -> np.ndarray:
  torch = _torch()
  if t.dtype == torch.bfloat16:
    import ml_dtypes  # noqa: PLC0415

    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  if t.dtype in (torch.float32, torch.float64, torch.float16):
    return t.numpy()
  raise HFCheckpointError(f"tensor dtype {t.dtype} is not supported (float32, bfloat16, or float8_e4m3fn with scales)")


def dequantize_fp8(w, scale_inv, block: tuple[int, int]) -> np.ndarray:
  """A float8_e4m3fn weight (out, in) times its per-block scales (ceil(out/b0), ceil(in/b1)) -> float32."""
  torch = _torch()
  s = scale_inv.float()
  full = s.repeat_interleave(block[0], 0)[: w.shape[0]].repeat_interleave(block[1], 1)[:, : w.shape[1]]
  return (w.to(torch.float32) * full).numpy()


def import_params(reader: HFReader, cfg_model, fmt: HFFormat, log=None) -> dict:
  """The checkpoint's tensors -> our parameter tree (numpy arrays in `cfg_model.param_dtype`), shard by shard."""
  import jax  # noqa: PLC0415

  from pangu_jax.model import transformer  # noqa: PLC0415

  _check_mla(cfg_model, "read from a Hugging Face directory")
  torch = _torch()
  abstract = jax.eval_shape(lambda: transformer.init_params(jax.random.key(0), cfg_model))
  # Our init's dtypes: `param_dtype`, except the router and its bias, which stay float32.
  params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
  table = {s.name: s for s in slots(_shape_tree(params), bool(cfg_model.sandwich_norm))}
  wanted = {n for n, s in table.items() if not s.export_only}
  present = reader.all_names()
  scales = {n for n in present if n.endswith("_scale_inv")}
  for name in sorted(present - scales):
    if name not in table and not name.endswith("rotary_emb.inv_freq"):
      raise HFCheckpointError(f"{reader.dir}: unexpected tensor {name} (config.json implies no such weight)")
  missing = sorted(wanted - present, key=_natural)
  if missing:
    raise HFCheckpointError(f"{reader.dir}: tensor {missing[0]} is missing ({len(missing)} missing in all)")
  for f in reader.files:
    names = [n for n in reader.names(f) if n in wanted]
    for name in names:
      s = table[name]
      t = reader.get(name, f)
      target = _get(params, s.path)
      view_shape = target.shape[len(s.index):]
      want_shape = _hf_shape(view_shape, s.kind)
      if tuple(t.shape) != want_shape:
        raise HFCheckpointError(f"{reader.dir}: tensor {name} has shape {tuple(t.shape)}; config.json implies "
                                f"{want_shape}")
      if t.dtype == torch.float8_e4m3fn:
        if fmt.fp8_block is None:
          raise HFCheckpointError(f"{reader.dir}: tensor {name} is float8 but config.json has no quantization_config")
        sname = name.replace(".weight", ".weight_scale_inv")
        if sname not in present:
          raise HFCheckpointError(f"{reader.dir}: float8 tensor {name} has no {sname}")
        a = dequantize_fp8(t, reader.get(sname), fmt.fp8_block)
      else:
        a = _to_numpy(t)
      perm = rope_permutation(cfg_model, s.kind, fmt.rope_interleave) if s.kind.endswith("rope") else None
      _write(target, s, a, perm)
      del t, a
    reader.close_file(f)
    if log:
      log(f"read {f} ({len(names)} tensors)")
  return params


def present_mtp_depth(reader: HFReader, cfg_model) -> int:
  """How many of the declared MTP layers the checkpoint holds (transformers saves DeepSeek-V3 without them: it
  has no MTP module). All declared ones, or none; a partial set is an error."""
  names = reader.all_names()
  have = [any(n.startswith(f"model.layers.{cfg_model.num_layers + j}.") for n in names)
          for j in range(cfg_model.mtp_depth)]
  if any(have) and not all(have):
    raise HFCheckpointError(f"{reader.dir}: holds {sum(have)} of the {cfg_model.mtp_depth} MTP layers config.json "
                            "declares (num_nextn_predict_layers)")
  return cfg_model.mtp_depth if all(have) else 0


def _write(target: np.ndarray, s: Slot, b: np.ndarray, perm) -> None:
  """The checkpoint tensor b -> its place in our array (the inverse of `_to_hf`)."""
  view = target[s.index] if s.index else target
  if s.kind in ("copy", "bias"):
    view[...] = b
  elif s.kind == "gate":
    view[:, : view.shape[1] // 2] = b.T
  elif s.kind == "up":
    view[:, view.shape[1] // 2:] = b.T
  elif s.kind == "eh":
    d = b.shape[0]
    w = b.T  # rows [embedding; hidden] -> ours [hidden; embedding]
    view[:d], view[d:] = w[d:], w[:d]
  else:
    view[...] = (b[perm] if perm is not None else b).T


def _natural(name: str):
  return [int(p) if p.isdigit() else p for p in name.split(".")]


def default_dtype(fmt: HFFormat) -> str:
  if fmt.fp8_block is not None:
    return "bfloat16"
  return fmt.dtype if fmt.dtype in ("float32", "bfloat16") else "float32"


def hf_bytes(params) -> int:
  """Bytes of the parameter arrays (for progress reports)."""
  import jax  # noqa: PLC0415

  return int(sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(params)))
