"""Peak memory of importing a Hugging Face checkpoint: ours against transformers' `from_pretrained`.

A synthetic DeepSeek-V3 checkpoint (our init, written by `pangu_jax.hf_checkpoint.write_hf_dir`) is cut into
--shards shards, so the checkpoint is several times one shard. Each import runs in a fresh subprocess: ours
(`pangu_jax.hf_checkpoint.import_params`: shards one at a time, memory-mapped, one tensor at a time into the
preallocated parameter arrays) and transformers' `DeepseekV3ForCausalLM.from_pretrained` (fp32, CPU). The figure is
the peak resident set (VmHWM) minus the process's peak after its imports, before reading anything: what the
import itself costs. The streaming claim holds when ours is close to the parameter bytes (plus at most one shard).
Last line: JSON with both increments, their ratio, and ours relative to the parameters and to one shard.
Usage: python benchmarks/hf_import_memory.py [--hidden=256 --layers=4 --experts=16 --ffn=512 --shards=8]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")

from absl import flags  # noqa: E402

import confspec  # noqa: E402

MB = 2**20


def peak_mb() -> float:
  """This process's peak resident set (Linux VmHWM: reset by exec, unlike ru_maxrss, which a child inherits from
  the parent that forked it)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, hf_dir: str) -> dict:
  """Runs one import in this (fresh) process; returns the peak increment."""
  if mode == "ours":
    import jax  # noqa: PLC0415
    import ml_dtypes  # noqa: F401, PLC0415
    import torch  # noqa: F401, PLC0415
    from safetensors import safe_open  # noqa: F401, PLC0415

    from pangu_jax import hf_checkpoint as hf  # noqa: PLC0415
    from pangu_jax.convert import derive_config  # noqa: PLC0415
    from pangu_jax.model import transformer  # noqa: PLC0415

    cfg, fmt = derive_config(hf_dir, "float32")
    reader = hf.HFReader(hf_dir)
    jax.eval_shape(lambda: transformer.init_params(jax.random.key(0), cfg.model))  # libraries loaded, then measure
    base = peak_mb()
    params = hf.import_params(reader, cfg.model, fmt)
    n = hf.hf_bytes(params)
  else:
    import torch  # noqa: PLC0415
    from transformers import DeepseekV3ForCausalLM  # noqa: PLC0415

    base = peak_mb()
    model = DeepseekV3ForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    n = sum(p.numel() * p.element_size() for p in model.parameters())
  return {"baseline_mb": base, "peak_mb": peak_mb(), "increment_mb": peak_mb() - base, "param_mb": n / MB}


def build(hf_dir: str) -> dict:
  import jax  # noqa: PLC0415

  from pangu_jax import hf_checkpoint as hf  # noqa: PLC0415
  from pangu_jax.config import base_config, validate_config  # noqa: PLC0415
  from pangu_jax.model import transformer  # noqa: PLC0415

  cfg = base_config()
  h = _HIDDEN.value
  cfg.model.update(dict(hidden_size=h, num_layers=_LAYERS.value, num_dense_layers=1, num_routed_experts=_EXPERTS.value,
                        top_k=2, expert_ffn_dim=_FFN.value, dense_ffn_dim=2 * _FFN.value, vocab_size=_VOCAB.value,
                        num_heads=4, q_lora_rank=h // 2, kv_lora_rank=h // 4, sandwich_norm=False, mtp_depth=0))
  cfg = validate_config(cfg)
  params = jax.device_get(transformer.init_params(jax.random.key(0), cfg.model))
  total = hf.hf_bytes(params)
  meta = hf.write_hf_dir(params, cfg.model, hf_dir, max_shard_bytes=total // _SHARDS.value + 1)
  shard = max(os.path.getsize(os.path.join(hf_dir, f)) for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
  return meta | {"largest_shard_mb": shard / MB, "checkpoint_mb": meta["bytes"] / MB}


def run_child(mode: str, hf_dir: str) -> dict:
  proc = subprocess.run([sys.executable, __file__, f"--child={mode}", f"--dir={hf_dir}"], capture_output=True,
                        text=True, timeout=1800, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if proc.returncode:
    raise SystemExit(f"{mode} import failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if _CHILD.value:
    print(json.dumps(child(_CHILD.value, _DIR.value)))
    return
  with tempfile.TemporaryDirectory() as tmp:
    hf_dir = os.path.join(tmp, "hf")
    ck = build(hf_dir)
    print(f"checkpoint: {ck['checkpoint_mb']:.1f} MiB in {ck['shards']} shards (largest {ck['largest_shard_mb']:.1f} "
          "MiB)", file=sys.stderr)
    ours = run_child("ours", hf_dir)
    theirs = run_child("transformers", hf_dir)
  out = {
      "checkpoint_mb": ck["checkpoint_mb"], "shards": ck["shards"], "largest_shard_mb": ck["largest_shard_mb"],
      "ours_peak_increment_mb": ours["increment_mb"], "transformers_peak_increment_mb": theirs["increment_mb"],
      "ratio_ours_vs_transformers": ours["increment_mb"] / max(theirs["increment_mb"], 1e-9),
      "ours_minus_params_mb": ours["increment_mb"] - ours["param_mb"],
      "ours_minus_params_in_shards": (ours["increment_mb"] - ours["param_mb"]) / ck["largest_shard_mb"],
      "ours": ours, "transformers": theirs,
  }
  print(json.dumps(out))


if __name__ == "__main__":
  _HIDDEN = flags.DEFINE_integer("hidden", 256, "hidden_size of the synthetic model.", lower_bound=8)
  _LAYERS = flags.DEFINE_integer("layers", 4, "Layers (the first dense).", lower_bound=2)
  _EXPERTS = flags.DEFINE_integer("experts", 16, "Routed experts.", lower_bound=2)
  _FFN = flags.DEFINE_integer("ffn", 512, "Expert FFN width (dense FFN: twice this).", lower_bound=1)
  _VOCAB = flags.DEFINE_integer("vocab", 8192, "Vocabulary.", lower_bound=256)
  _SHARDS = flags.DEFINE_integer("shards", 8, "Shards the checkpoint is cut into.", lower_bound=2)
  _CHILD = flags.DEFINE_enum("child", "", ["", "ours", "transformers"], "Internal: run one import and report.")
  _DIR = flags.DEFINE_string("dir", "", "Internal: the checkpoint directory of --child.")
  confspec.run(main)
