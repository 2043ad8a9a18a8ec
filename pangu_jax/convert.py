"""`python -m pangu_jax.convert --hf_dir=DIR --workdir=D [--dtype=float32|bfloat16]`: a Hugging Face checkpoint in.

Reads a DeepSeek-V3 (`model_type: deepseek_v3`) or openPangu Ultra MoE (`pangu_ultra_moe`) model directory
(`config.json`, `model.safetensors` or shards with `model.safetensors.index.json`, FP8 block-quantised weights
included; see pangu_jax/hf_checkpoint.py and docs/hf_checkpoints.md) and writes a workdir that every reader of
workdirs accepts:

  D/config.json        our config, derived from the checkpoint's config.json (a field we cannot honour stops the
                       import with one line naming it)
  D/config.py          a config file that loads D/config.json, for the trainer's --config
  D/checkpoints/0      the weights as a step-0 train state (fresh optimiser state)
  D/tokenizer/         the checkpoint's tokenizer files, when it has any

Then `pangu_jax.generate --workdir=D`, `npu_backend.export --workdir=D`, `npu_backend.parity --workdir=D`, and
fine-tuning with `pangu_jax.train --config=D/config.py --workdir=D` (resumes from step 0). The import refuses a
workdir that already holds checkpoints. Prints a JSON summary as the last line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

CONFIG_PY = '''"""Written by pangu_jax.convert: this workdir's config is config.json beside this file (for the trainer's
--config: `python -m pangu_jax.train --config=THIS_FILE --workdir=THIS_DIR`, with --config.x=y overrides)."""

import json
import os

from pangu_jax.config import with_defaults


def get_config():
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")) as f:
    return with_defaults(json.load(f))
'''


def derive_config(hf_dir: str, dtype: str | None = None):
  """(our validated config, HFFormat) for a Hugging Face directory."""
  from pangu_jax import hf_checkpoint as hf  # noqa: PLC0415
  from pangu_jax.config import base_config, validate_config  # noqa: PLC0415

  model, fmt = hf.model_config_from_hf(hf.read_hf_config(hf_dir))
  cfg = base_config()
  cfg.model.update(model)
  cfg.model.param_dtype = cfg.model.dtype = dtype or hf.default_dtype(fmt)
  cfg.model.tiny_init = False  # the weights are the checkpoint's; no init is drawn
  cfg.train.seq_len = min(cfg.train.seq_len, cfg.model.max_seq_len)
  return validate_config(cfg), fmt


def convert(hf_dir: str, workdir: str, dtype: str | None = None, log=None) -> dict:
  """Imports `hf_dir` into a new workdir (see the module docstring); returns a summary dict."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from confspec import RunError  # noqa: PLC0415
  from pangu_jax import hf_checkpoint as hf  # noqa: PLC0415
  from pangu_jax.train.state import train_state_from_params  # noqa: PLC0415
  from runkit.atomic import atomic_write  # noqa: PLC0415
  from runkit.checkpoint import Checkpointer  # noqa: PLC0415
  from runkit.lock import WorkdirLock  # noqa: PLC0415

  log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
  t0 = time.perf_counter()
  cfg, fmt = derive_config(hf_dir, dtype)
  reader = hf.HFReader(hf_dir)
  declared_mtp = cfg.model.mtp_depth
  cfg.model.mtp_depth = hf.present_mtp_depth(reader, cfg.model)
  if cfg.model.mtp_depth != declared_mtp:
    log(f"config.json declares {declared_mtp} MTP layer(s) (num_nextn_predict_layers) but the checkpoint holds "
        "none (transformers saves DeepSeek-V3 without them): imported without MTP")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise RunError(f"--workdir: {workdir} already holds checkpoints; import into a new directory")
  os.makedirs(workdir, exist_ok=True)
  with WorkdirLock(workdir, "pangu_jax.convert"):
    log(f"importing {fmt.layout} from {hf_dir} ({len(reader.files)} file(s), rope "
        f"{'interleaved' if fmt.rope_interleave else 'half'}{', fp8' if fmt.fp8_block else ''}) as "
        f"{cfg.model.param_dtype}")
    copied = [f for f in hf.TOKENIZER_FILES if os.path.exists(os.path.join(hf_dir, f))]
    if "tokenizer.json" in copied:  # fine-tuning and generate use the checkpoint's own tokenizer
      cfg.data.tokenizer = "bpe"
      cfg.data.tokenizer_path = os.path.abspath(os.path.join(workdir, "tokenizer", "tokenizer.json"))
    params = hf.import_params(reader, cfg.model, fmt, log=log)
    state = train_state_from_params(cfg, jax.tree.map(jax.numpy.asarray, params))
    ckpt = Checkpointer(ckpt_dir, keep=cfg.train.keep_checkpoints, async_save=False, log=log)
    ckpt.save(0, state, {"config": json.loads(cfg.to_json()), "imported_from": os.path.abspath(hf_dir)})
    ckpt.wait()
    ckpt.close()
    if copied:
      os.makedirs(os.path.join(workdir, "tokenizer"), exist_ok=True)
      for f in copied:
        shutil.copy2(os.path.join(hf_dir, f), os.path.join(workdir, "tokenizer", f))
    atomic_write(os.path.join(workdir, "config.json"), cfg.to_json(indent=2))
    atomic_write(os.path.join(workdir, "config.py"), CONFIG_PY)
  n = int(sum(np.prod(a.shape) for a in jax.tree.leaves(params)))
  return {"workdir": workdir, "layout": fmt.layout, "parameters": n, "dtype": cfg.model.param_dtype,
          "mtp_depth": cfg.model.mtp_depth, "fp8": fmt.fp8_block is not None,
          "rope_interleave": fmt.rope_interleave, "tokenizer_files": copied,
          "seconds": time.perf_counter() - t0}


def main(argv):
  del argv
  summary = convert(_HF_DIR.value, _WORKDIR.value, _DTYPE.value or None)
  print(json.dumps(summary))


if __name__ == "__main__":
  from absl import flags

  import confspec

  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _HF_DIR = flags.DEFINE_string("hf_dir", None, "Hugging Face model directory (config.json + safetensors).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "New workdir to write (must not hold checkpoints).")
  _DTYPE = flags.DEFINE_enum("dtype", "", ["", "float32", "bfloat16"],
                             "Parameter dtype (default: the checkpoint's; bfloat16 for an FP8 checkpoint).")
  flags.mark_flags_as_required(["hf_dir", "workdir"])
  confspec.run(main)
