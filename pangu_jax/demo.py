"""`python -m pangu_jax.demo`: the project's main job on embedded defaults.

For now a smoke run that proves the install end to end: counts the 718B model's
parameters abstractly, builds the tiny model, runs a forward pass and both
decoders, and checks that torch and Brax/MJX import. Each stage prints its
result; a failing stage is reported and the rest still run.
"""

from __future__ import annotations

import sys
import time
import traceback

from absl import app


def _stage(name, fn, failures):
  t0 = time.perf_counter()
  print(f"[demo] {name} ...", flush=True)
  try:
    msg = fn()
    print(f"[demo] {name}: ok ({time.perf_counter() - t0:.1f}s) {msg or ''}", flush=True)
  except Exception as e:  # noqa: BLE001 (a failing stage must not stop the later ones)
    failures.append(name)
    print(f"[demo] {name}: FAILED: {type(e).__name__}: {e}", flush=True)
    traceback.print_exc(limit=3)


def _info():
  from pangu_jax.params import count_params
  from pangu_jax.presets import load_preset

  c = count_params(load_preset("ultra_moe_718b").model)
  return f"718B preset: total {c['total_params'] / 1e9:.1f}B, activated {c['activated_params'] / 1e9:.1f}B"


def _tiny_model():
  import jax
  import numpy as np

  from pangu_jax.model import decode, transformer
  from pangu_jax.presets import load_preset
  from pangu_jax.tokenizer import ByteTokenizer

  cfg = load_preset("tiny").model
  params = transformer.init_params(jax.random.key(0), cfg)
  tok = ByteTokenizer()
  prompt = tok.encode("The model ")[None]
  out = transformer.forward(params, prompt, cfg)
  greedy = np.asarray(decode.generate(params, prompt, cfg, 8))
  spec, stats = decode.speculative_generate(params, prompt, cfg, 8)
  assert (greedy == spec).all(), "speculative decoding must equal greedy"
  return f"logits {tuple(out.logits.shape)}, acceptance length {stats['acceptance_length']:.2f} (untrained)"


def _imports():
  import brax
  import mujoco
  import torch

  return f"torch {torch.__version__}, brax {brax.__version__}, mujoco {mujoco.__version__}"


def main(argv):
  del argv
  failures = []
  for name, fn in [("parameter count", _info), ("tiny model", _tiny_model), ("backends import", _imports)]:
    _stage(name, fn, failures)
  if failures:
    print(f"[demo] failed stages: {', '.join(failures)}")
    sys.exit(1)
  print("[demo] all stages passed")


if __name__ == "__main__":
  app.run(main)
