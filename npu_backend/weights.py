"""JAX parameters (or a trainer checkpoint) -> a torch state_dict in safetensors; reading a safetensors file back
gives torch tensors by name. (Hugging Face directories, both ways, are `pangu_jax.hf_checkpoint`.)

Two layouts:
  "jax"    flat JAX names, JAX shapes (layers stacked): what an exported graph consumes (`weights.safetensors`).
  "torch"  per-layer names and torch Linear layout (out, in) exactly as a Hugging Face DeepSeek-V3 / openPangu
           checkpoint names them (`pangu_jax.hf_checkpoint.slots`: pre-norm blocks' pre-MLP norm is
           `post_attention_layernorm`; sandwich blocks have the four openPangu norms; MTP depth j is layer
           num_layers + j with `eh_proj` over [embedding; hidden]), in our 'half' RoPE layout unless
           `rope_interleave=True` (which needs the model config).

Loading never uses pickle (safetensors only); a truncated or corrupt file gets a one-line error.
bf16 tensors are written as bf16 (cast to fp32 only when converted to numpy).
"""

from __future__ import annotations

import numpy as np

from npu_backend.runtime.graph import load_tensors, to_torch


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


class _Dims:
  """What the name map needs of a model config when none is given: the sandwich norm, read off the params."""

  def __init__(self, params):
    stack = params.get("moe_layers") or params.get("dense_layers")
    self.sandwich_norm = "post_attn_norm" in stack
    self.param_dtype = "float32"


def to_torch_layout(params, cfg_model=None, *, rope_interleave: bool = False) -> dict[str, np.ndarray]:
  """JAX parameter pytree -> {torch name: array in torch layout} (see the module docstring)."""
  from pangu_jax.hf_checkpoint import hf_tensors  # noqa: PLC0415

  if rope_interleave and cfg_model is None:
    raise ValueError("to_torch_layout: rope_interleave=True needs the model config")
  p = {k: v for k, v in params.items()}
  return dict(hf_tensors(p, cfg_model if cfg_model is not None else _Dims(p), rope_interleave=rope_interleave))


def save_safetensors(arrays: dict[str, np.ndarray], path: str) -> None:
  from safetensors.torch import save_file  # noqa: PLC0415

  from runkit.atomic import atomic_path  # noqa: PLC0415

  with atomic_path(path) as tmp:
    save_file({k: to_torch(v).contiguous() for k, v in arrays.items()}, tmp)


def load_safetensors(path: str) -> dict:
  """torch tensors by name; one-line error when the file is missing, truncated or corrupt. No pickle."""
  return load_tensors(path)
