"""Train-step throughput and MFU of the tiny and small presets on this machine (one device, fp32).

Measures the full jitted train step (forward, backward, AdamW, routing statistics) after compilation, best
of N repeats, and MFU under the reference's FLOP accounting (pangu_jax/flops.py) over the measured fp32
matmul peak. A PyTorch competitor of the same architecture arrives with the exporter (npu_backend); until
then the JSON carries `torch_tokens_per_s: null`.
Last line: JSON with per-preset tokens_per_s, mfu, step_s, compile_s.
Usage: python benchmarks/train_step.py [--presets=tiny,small] [--repeats=5]
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402
from timing import time_train_step  # noqa: E402

import confspec  # noqa: E402
from pangu_jax.flops import train_flops_per_token  # noqa: E402
from pangu_jax.presets import load_preset  # noqa: E402
from pangu_jax.train.peak import measure_matmul_flops, record_peak  # noqa: E402


def bench(name: str, repeats: int, peak: float) -> dict:
  cfg = load_preset(name)
  t = cfg.train
  best, compile_s = time_train_step(cfg, repeats)
  tps = t.batch_size * t.seq_len / best
  mfu = tps * train_flops_per_token(cfg.model, t.seq_len) / peak
  print(f"{name:>6}: {best * 1e3:8.1f} ms/step, {tps:9.0f} tokens/s, MFU {mfu:.3f} (compile {compile_s:.1f}s)",
        flush=True)
  return {"tokens_per_s": tps, "mfu": mfu, "step_s": best, "compile_s": compile_s}


def main(argv):
  del argv
  peak = measure_matmul_flops()
  record_peak(peak)
  print(f"fp32 2048^3 matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
  out = {"matmul_peak_gflops": peak / 1e9, "torch_tokens_per_s": None, "ratio_vs_torch": None}
  for name in _PRESETS.value:
    out[name] = bench(name, _REPEATS.value, peak)
  print(json.dumps(out))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _PRESETS = flags.DEFINE_list("presets", ["tiny", "small"], "Presets to time (comma-separated).")
  _REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (best of).", lower_bound=1)
  confspec.run(main)
