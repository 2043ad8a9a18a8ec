"""Decoder graphs: a prefill chunk and the decode step, with the KV cache and the position as explicit inputs.

Our definition (a documented bucket set, not dynamic shapes): two graphs over one cache of `max_len` positions
and a fixed batch, exported from `pangu_jax.model.transformer.forward_cached`, the function the JAX decoder
runs:
  chunk   C new tokens at position `start` (prefill: a prompt of P tokens is floor(P / C) chunk calls, then
          P mod C step calls; the cache is causal, so this computes what one call on all P tokens computes);
  step    1 new token (decode).
Inputs: tokens (B, C or 1) int32, start () int32, then the cache leaves in `decode.json`'s order (MLA: the
normed latent `c` and the rotary key `k_rope` per layer, stacked like the parameters, and the MTP module's; GQA:
`k` and `v`). Outputs: logits (B, C or 1, V), the final hidden state (B, C or 1, d), then the new cache leaves in
the same order. `decode.json` records batch, max_len, chunk and the cache layout; `npu_backend.decoder` reads it.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from npu_backend.export.trace import export_function
from npu_backend.runtime import graph as rt
from pangu_jax.model import transformer
from runkit.atomic import atomic_write_json, make_dir

DECODE_DIR = "decode"
GRAPHS = ("chunk", "step")


def _path_name(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def cache_layout(cfg_model, batch: int, max_len: int) -> tuple[list, object]:
  """([{name, shape, dtype}] of the cache leaves in graph order, the cache's treedef)."""
  cache = jax.eval_shape(lambda: transformer.init_cache(cfg_model, batch, max_len))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(cache)
  return [{"name": _path_name(p), "shape": list(a.shape), "dtype": np.dtype(a.dtype).name} for p, a in leaves], \
      treedef


def decoder_function(cfg_model, treedef):
  """fn(params, tokens, start, *cache_leaves) -> [logits, hidden, *new_cache_leaves]."""

  def fn(params, tokens, start, *cache_leaves):
    cache = jax.tree_util.tree_unflatten(treedef, list(cache_leaves))
    logits, hidden, new = transformer.forward_cached(params, tokens, cache, start, cfg_model)
    return [logits, hidden] + jax.tree.leaves(new)

  return fn


def export_decoder(cfg_model, params, out_dir: str, *, batch: int = 1, max_len: int = 512, chunk: int = 16) -> dict:
  """Writes `out_dir/decode/{chunk,step}/` (graph.json + weights.safetensors each) and `decode.json`."""
  if max_len > cfg_model.max_seq_len:
    raise ValueError(f"--decode_max_len: {max_len} is out of range; allowed: <= model.max_seq_len "
                     f"({cfg_model.max_seq_len})")
  chunk = min(chunk, max_len)
  layout, treedef = cache_layout(cfg_model, batch, max_len)
  fn = decoder_function(cfg_model, treedef)
  zeros = [np.zeros(x["shape"], x["dtype"]) for x in layout]
  root = os.path.join(out_dir, DECODE_DIR)
  make_dir(root, "--out")
  nodes = {}
  for name, width in (("chunk", chunk), ("step", 1)):
    graph = export_function(fn, params, np.zeros((batch, width), np.int32), np.int32(0), *zeros)
    rt.save(os.path.join(root, name), graph.to_json(), graph.tensors)
    nodes[name] = len(graph.nodes)
  meta = {"format": "npu_backend.decode/1", "batch": batch, "max_len": max_len, "chunk": chunk,
          "vocab_size": cfg_model.vocab_size, "hidden_size": cfg_model.hidden_size, "cache": layout,
          "attention": cfg_model.get("attention", "mla"), "nodes": nodes}
  atomic_write_json(os.path.join(root, "decode.json"), meta)
  return meta

