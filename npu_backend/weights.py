"""JAX parameters (or a trainer checkpoint) -> a torch state_dict in safetensors; reading a safetensors file back
gives torch tensors by name (there is no import of a torch state_dict into JAX parameters).

Two layouts:
  "jax"    flat JAX names, JAX shapes (layers stacked): what an exported graph consumes (`weights.safetensors`).
  "torch"  per-layer names in the DeepSeek-V3 / openPangu (vLLM) convention, torch Linear layout (out, in):
           the form other PyTorch code expects.

Name map ("torch" layout; i = global layer index, dense layers first, then MoE layers; MTP depth j is layer
num_layers + j, as in DeepSeek-V3 checkpoints; a JAX kernel (in, out) becomes weight (out, in)):

  embed (V, d)                           model.embed_tokens.weight (V, d)
  head (d, V)                            lm_head.weight (V, d)
  final_norm                             model.norm.weight
  *.attn_norm / post_attn_norm           model.layers.i.input_layernorm / post_attention_layernorm .weight
  *.mlp_norm / post_mlp_norm             model.layers.i.pre_mlp_layernorm / post_mlp_layernorm .weight
  *.attn.{q_a,q_b,q,kv_a,kv_b,o}         model.layers.i.self_attn.{q_a_proj,q_b_proj,q_proj,kv_a_proj_with_mqa,
                                         kv_b_proj,o_proj}.weight (transposed)
  *.attn.{q_a_norm,kv_a_norm}            model.layers.i.self_attn.{q_a_layernorm,kv_a_layernorm}.weight
  *.mlp.w_in (d, 2F) / w_out (F, d)      model.layers.i.mlp.{gate_proj,up_proj}.weight (F, d) / down_proj (d, F)
  *.moe.router (d, E)                    model.layers.i.mlp.gate.weight (E, d)
  *.moe.router_bias (E,)                 model.layers.i.mlp.gate.e_score_correction_bias
  *.moe.experts.w_in[e] / w_out[e]       model.layers.i.mlp.experts.e.{gate_proj,up_proj,down_proj}.weight
  *.moe.shared.w_in / w_out              model.layers.i.mlp.shared_experts.{gate_proj,up_proj,down_proj}.weight
  mtp.{hidden_norm,embed_norm,proj}      model.layers.(L+j).{hnorm,enorm,eh_proj}.weight (proj transposed)
  mtp.out_norm                           model.layers.(L+j).shared_head.norm.weight
  mtp.block.*                            model.layers.(L+j).* as a layer

Loading never uses pickle (safetensors only); a truncated or corrupt file gets a one-line error.
bf16 tensors are written as bf16 (cast to fp32 only when converted to numpy).
"""

from __future__ import annotations

import numpy as np

from npu_backend.runtime.graph import load_tensors, to_torch

ATTN = {"q_a": "q_a_proj", "q_b": "q_b_proj", "q": "q_proj", "kv_a": "kv_a_proj_with_mqa", "kv_b": "kv_b_proj",
        "o": "o_proj"}
ATTN_NORMS = {"q_a_norm": "q_a_layernorm", "kv_a_norm": "kv_a_layernorm"}
BLOCK_NORMS = {"attn_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
               "mlp_norm": "pre_mlp_layernorm", "post_mlp_norm": "post_mlp_layernorm"}


def flatten(params, prefix: str = "") -> dict[str, np.ndarray]:
  """Nested dict -> {"a.b.c": array} (the "jax" layout; the exporter's weight names)."""
  out = {}
  for k, v in params.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, name + "."))
    else:
      out[name] = np.asarray(v)
  return out


def _swiglu_split(w_in):
  f = w_in.shape[-1] // 2
  return w_in[..., :f], w_in[..., f:]


def _block_to_torch(p: dict, pre: str, out: dict) -> None:
  for k, v in p.items():
    if k in BLOCK_NORMS:
      out[f"{pre}{BLOCK_NORMS[k]}.weight"] = v
  for k, v in p["attn"].items():
    if k in ATTN:
      out[f"{pre}self_attn.{ATTN[k]}.weight"] = v.T
    else:
      out[f"{pre}self_attn.{ATTN_NORMS[k]}.weight"] = v

  def mlp(q, where):
    gate, up = _swiglu_split(q["w_in"])
    out[f"{where}gate_proj.weight"], out[f"{where}up_proj.weight"] = gate.T, up.T
    out[f"{where}down_proj.weight"] = q["w_out"].T

  if "mlp" in p:
    mlp(p["mlp"], f"{pre}mlp.")
  else:
    m = p["moe"]
    out[f"{pre}mlp.gate.weight"] = m["router"].T
    if "router_bias" in m:
      out[f"{pre}mlp.gate.e_score_correction_bias"] = m["router_bias"]
    for e in range(m["experts"]["w_in"].shape[0]):
      mlp({"w_in": m["experts"]["w_in"][e], "w_out": m["experts"]["w_out"][e]}, f"{pre}mlp.experts.{e}.")
    if "shared" in m:
      mlp(m["shared"], f"{pre}mlp.shared_experts.")


def to_torch_layout(params) -> dict[str, np.ndarray]:
  """JAX parameter pytree -> {torch name: array in torch layout} (see the module docstring)."""
  p = {k: v for k, v in params.items()}
  out = {"model.embed_tokens.weight": np.asarray(p["embed"]), "lm_head.weight": np.asarray(p["head"]).T,
         "model.norm.weight": np.asarray(p["final_norm"])}
  i = 0
  for stack in ("dense_layers", "moe_layers"):
    if stack not in p:
      continue
    n = np.asarray(p[stack]["attn_norm"]).shape[0]
    for j in range(n):
      layer = _index_tree(p[stack], j)
      _block_to_torch(layer, f"model.layers.{i}.", out)
      i += 1
  if "mtp" in p:
    for j in range(np.asarray(p["mtp"]["proj"]).shape[0]):
      m = _index_tree(p["mtp"], j)
      pre = f"model.layers.{i + j}."
      out[f"{pre}hnorm.weight"], out[f"{pre}enorm.weight"] = m["hidden_norm"], m["embed_norm"]
      out[f"{pre}eh_proj.weight"] = m["proj"].T
      out[f"{pre}shared_head.norm.weight"] = m["out_norm"]
      _block_to_torch(m["block"], pre, out)
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _index_tree(tree, j):
  return {k: (_index_tree(v, j) if isinstance(v, dict) else np.asarray(v)[j]) for k, v in tree.items()}


def save_safetensors(arrays: dict[str, np.ndarray], path: str) -> None:
  from safetensors.torch import save_file  # noqa: PLC0415

  from runkit.atomic import atomic_path  # noqa: PLC0415

  with atomic_path(path) as tmp:
    save_file({k: to_torch(v).contiguous() for k, v in arrays.items()}, tmp)


def load_safetensors(path: str) -> dict:
  """torch tensors by name; one-line error when the file is missing, truncated or corrupt. No pickle."""
  return load_tensors(path)
