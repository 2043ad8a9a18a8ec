"""Export the Pangu model (or one of its pieces) to an export directory."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from npu_backend.export.trace import Graph, export_function
from npu_backend.runtime import graph as rt
from npu_backend.weights import save_safetensors, to_torch_layout
from pangu_jax.model import transformer
from runkit.atomic import make_dir


def model_forward(cfg_model):
  """fn(params, tokens) -> logits, or (logits, mtp_logits) when the model has MTP."""

  def fn(params, tokens):
    out = transformer.forward(params, tokens, cfg_model)
    return out.logits if out.mtp_logits is None else (out.logits, out.mtp_logits)

  return fn


def export_model(cfg_model, params, batch: int, seq_len: int) -> Graph:
  tokens = np.zeros((batch, seq_len), np.int32)
  return export_function(model_forward(cfg_model), params, tokens)


def write_export(out_dir: str, graph: Graph, params, meta: dict, cfg_model=None) -> None:
  """graph.json + weights.safetensors (JAX layout, what the graph reads) + state_dict.safetensors (torch layout,
  Hugging Face names, our 'half' RoPE layout)."""
  rt.save(out_dir, graph.to_json(), graph.tensors)
  save_safetensors(to_torch_layout(jax.device_get(params), cfg_model), os.path.join(out_dir, "state_dict.safetensors"))
  with open(os.path.join(out_dir, "export.json"), "w") as f:
    json.dump(meta, f, indent=2)


def export_to_dir(cfg, params, out_dir: str, batch: int, seq_len: int, *, hf: bool = True,
                  hf_rope_interleave: bool = True, hf_shard_bytes: int | None = None,
                  tokenizer_dir: str | None = None, log=None, decode_max_len: int = 0,
                  decode_chunk: int = 16) -> dict:
  """The graph export, and (`hf`) a Hugging Face directory `out_dir/hf` (`pangu_jax.hf_checkpoint.write_hf_dir`:
  deepseek_v3 or, with the sandwich norm, pangu_ultra_moe; the config is checked before anything is traced);
  with `decode_max_len` > 0 the decoder graphs (`npu_backend.export.decode`) over a cache of that many positions;
  the tokenizer files of `tokenizer_dir` are copied to `out_dir/tokenizer/` (npu_backend.generate reads them)."""
  from pangu_jax import hf_checkpoint  # noqa: PLC0415

  if hf:
    hf_checkpoint.hf_config(cfg.model, rope_interleave=hf_rope_interleave)  # a field it cannot express: one line
  make_dir(out_dir, "--out")  # a file in the way or no permission: one line, before anything is traced
  t0 = time.perf_counter()
  graph = export_model(cfg.model, params, batch, seq_len)
  seconds = time.perf_counter() - t0
  meta = {"config": json.loads(cfg.to_json()), "inputs": graph.inputs, "nodes": len(graph.nodes),
          "export_s": seconds, "outputs": ["logits", "mtp_logits"][: len(graph.outputs)]}
  if hf:
    host = jax.device_get(params)
    meta["hf"] = hf_checkpoint.write_hf_dir(
        host, cfg.model, os.path.join(out_dir, "hf"), rope_interleave=hf_rope_interleave,
        max_shard_bytes=hf_shard_bytes or hf_checkpoint.DEFAULT_SHARD_BYTES, tokenizer_dir=tokenizer_dir, log=log)
  if decode_max_len > 0:
    from npu_backend.export.decode import export_decoder  # noqa: PLC0415

    t1 = time.perf_counter()
    meta["decode"] = export_decoder(cfg.model, params, out_dir, max_len=decode_max_len, chunk=decode_chunk)
    meta["decode"]["export_s"] = time.perf_counter() - t1
    meta["decode"].pop("cache")
  if tokenizer_dir and os.path.isdir(tokenizer_dir):
    import shutil  # noqa: PLC0415

    shutil.copytree(tokenizer_dir, os.path.join(out_dir, "tokenizer"), dirs_exist_ok=True)
  write_export(out_dir, graph, params, meta, cfg.model)
  return meta


def verify_export(out_dir: str, cfg, params, batch: int, seq_len: int, device: str = "auto") -> dict:
  """Reloads the export on the chosen device and compares it with JAX on random tokens."""
  from npu_backend.device import select_device  # noqa: PLC0415

  choice = select_device(device)
  import torch  # noqa: PLC0415

  module = rt.load(out_dir, device=choice.device)
  toks = np.asarray(jax.random.randint(jax.random.key(1), (batch, seq_len), 0, cfg.model.vocab_size), np.int32)
  want = jax.tree.leaves(model_forward(cfg.model)(params, toks))
  with torch.no_grad():
    got = module(torch.from_numpy(toks.copy()).to(choice.device))
  got = [got] if isinstance(got, torch.Tensor) else list(got)
  rel = max(float(np.linalg.norm(g.float().cpu().numpy() - np.asarray(w)) / np.linalg.norm(np.asarray(w)))
            for g, w in zip(got, want))
  return {"backend": choice.device, "backend_reason": choice.reason, "max_rel_err": rel}
