"""`python -m npu_backend.export --config=F [--workdir=D] --out=DIR`: export the Pangu forward to PyTorch.

Writes DIR/graph.json (the graph), DIR/weights.safetensors (its weights, JAX names and layouts),
DIR/state_dict.safetensors (the same weights in torch layout, DeepSeek-style names: see
npu_backend/weights.py) and DIR/export.json. Shapes are static: --batch x --seq_len tokens.
Run the export anywhere with `npu_backend.runtime.load(DIR)` (torch only).
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

import confspec
from npu_backend.export.model import export_to_dir, verify_export
from pangu_jax.workdir import load_model


def main(argv):
  del argv
  cfg, params = load_model(_CONFIG.value, _WORKDIR.value)
  meta = export_to_dir(cfg, params, _OUT.value, _BATCH.value, _SEQ.value)
  print(f"exported {meta['nodes']} nodes in {meta['export_s']:.1f}s to {_OUT.value}")
  summary = {k: meta[k] for k in ("nodes", "export_s", "inputs", "outputs")} | {"out": _OUT.value}
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
  flags.mark_flags_as_required(["out"])
  confspec.run(main)
