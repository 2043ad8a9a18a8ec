"""`python -m npu_backend.export --config=F [--workdir=D] --out=DIR`: export the Pangu forward to PyTorch.

Writes DIR/graph.json (the graph), DIR/weights.safetensors (its weights, JAX names and layouts),
DIR/state_dict.safetensors (the same weights in torch layout, Hugging Face names, our 'half' RoPE layout: see
npu_backend/weights.py), DIR/export.json, and DIR/hf/: a Hugging Face model directory (config.json,
safetensors sharded above --hf_shard_gb with the index, the workdir's tokenizer files) that transformers'
`AutoModelForCausalLM.from_pretrained` and vLLM load: `deepseek_v3`, or `pangu_ultra_moe` for a sandwich-norm
model (pangu_jax/hf_checkpoint.py, docs/hf_checkpoints.md). Shapes are static: --batch x --seq_len tokens.
Run the export anywhere with `npu_backend.runtime.load(DIR)` (torch only).
With --decode (default) also DIR/decode/: the prefill-chunk and decode-step graphs with the KV cache over
--decode_max_len positions (npu_backend/export/decode.py), which `python -m npu_backend.generate --export=DIR`
runs without JAX; the workdir's tokenizer is copied to DIR/tokenizer/.
"""

from __future__ import annotations

import json
import os

from absl import flags
from ml_collections import config_flags

import confspec
from npu_backend.export.model import export_to_dir, verify_export
from pangu_jax.workdir import load_model


def main(argv):
  del argv
  cfg, params = load_model(_CONFIG.value, _WORKDIR.value)
  tok = os.path.join(_WORKDIR.value, "tokenizer") if _WORKDIR.value else None
  meta = export_to_dir(cfg, params, _OUT.value, _BATCH.value, _SEQ.value, hf=_HF.value,
                       hf_rope_interleave=_HF_ROPE.value == "interleave",
                       hf_shard_bytes=int(_HF_SHARD_GB.value * 2**30), tokenizer_dir=tok, log=print,
                       decode_max_len=(min(_DECODE_MAX_LEN.value, cfg.model.max_seq_len) if _DECODE.value else 0),
                       decode_chunk=_DECODE_CHUNK.value)
  print(f"exported {meta['nodes']} nodes in {meta['export_s']:.1f}s to {_OUT.value}")
  summary = {k: meta[k] for k in ("nodes", "export_s", "inputs", "outputs")} | {"out": _OUT.value}
  if "decode" in meta:
    summary["decode"] = meta["decode"]
  if "hf" in meta:
    summary["hf"] = meta["hf"] | {"dir": os.path.join(_OUT.value, "hf")}
  if _VERIFY.value:
    summary.update(verify_export(_OUT.value, cfg, params, _BATCH.value, _SEQ.value, _DEVICE.value))
    print(f"backend: {summary['backend']} ({summary['backend_reason']}); logits relative L2 error vs JAX: "
          f"{summary['max_rel_err']:.2e}")
  if _JSON.value:
    print(json.dumps(summary))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Pangu config file (fresh weights unless --workdir).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir: export its latest checkpoint.")
  _OUT = flags.DEFINE_string("out", None, "Output directory.")
  _BATCH = flags.DEFINE_integer("batch", 1, "Batch size of the exported graph.", lower_bound=1)
  _SEQ = flags.DEFINE_integer("seq_len", 64, "Sequence length of the exported graph.", lower_bound=1)
  _JSON = flags.DEFINE_bool("json", False, "Print a JSON summary as the last line.")
  _DEVICE = flags.DEFINE_enum("device", "auto", ["auto", "npu", "cuda", "cpu"], "Device for the verification run.")
  _VERIFY = flags.DEFINE_bool("verify", True, "Reload the export on --device and compare its logits with JAX's.")
  _HF = flags.DEFINE_bool("hf", True, "Also write a Hugging Face model directory to --out/hf.")
  _HF_ROPE = flags.DEFINE_enum("hf_rope", "interleave", ["interleave", "half"],
                               "RoPE layout of the Hugging Face weights (config.json's rope_interleave).")
  _HF_SHARD_GB = flags.DEFINE_float("hf_shard_gb", 5.0, "Shard the Hugging Face weights above this size (GiB).",
                                    lower_bound=1e-6)
  _DECODE = flags.DEFINE_bool("decode", True, "Also export the decoder graphs (prefill chunk, decode step, KV cache).")
  _DECODE_MAX_LEN = flags.DEFINE_integer("decode_max_len", 512, "Cache positions of the decoder graphs (prompt + "
                                         "generated tokens; capped at model.max_seq_len).", lower_bound=1)
  _DECODE_CHUNK = flags.DEFINE_integer("decode_chunk", 16, "Tokens per prefill-chunk call of the decoder.",
                                       lower_bound=1)
  flags.mark_flags_as_required(["out"])
  confspec.run(main)
