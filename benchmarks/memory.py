"""Memory policies: compiled peak memory and step time of the train step under each remat policy.

Policies (config.parallel.remat): none (keep every activation), full (keep only each layer's input, recompute the
layer), fine (keep matmul outputs, recompute norms, activations, routing permutations), offload (fine, with the
kept matmul outputs in host memory: `pinned_host`; on this CPU backend host and device memory are the same RAM, so
the figure shows the compiler's accounting, not a saving a real accelerator would see).

Peak memory is XLA's own figure for the compiled step (`compiled.memory_analysis()`: temporaries + arguments +
outputs - aliased), which works on CPU. The comparison the issue asks for is within this run: fine against none
(memory) and fine against full (time).
Last line: JSON with per-policy peak_mb and step_s, and the two ratios.
Usage: python benchmarks/memory.py [--repeats=3] [--layers=6] [--seq_len=256]
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from timing import best_time  # noqa: E402

import confspec  # noqa: E402
from pangu_jax.config import validate_config  # noqa: E402
from pangu_jax.parallel import runtime  # noqa: E402
from pangu_jax.presets import load_preset  # noqa: E402
from pangu_jax.train.state import init_sharded_train_state, make_train_step  # noqa: E402

POLICIES = ("none", "full", "fine", "offload")


def peak_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)


def measure(policy: str, layers: int, seq: int, batch: int, repeats: int) -> dict:
  cfg = load_preset("tiny")
  cfg.model.num_layers = layers
  cfg.train.seq_len, cfg.train.batch_size = seq, batch
  cfg.parallel.remat = policy
  cfg = validate_config(cfg)
  par = runtime.setup(cfg)
  state = init_sharded_train_state(cfg, par)
  toks = np.asarray(jax.random.randint(jax.random.key(0), (batch, seq + 1), 0, cfg.model.vocab_size))
  compiled = make_train_step(cfg, par).lower(state, toks, np.float32(0)).compile()
  holder = {"state": state}

  def step():
    holder["state"], m = compiled(holder["state"], toks, np.float32(0))
    jax.block_until_ready(m["loss"])

  return {"peak_mb": peak_bytes(compiled) / 2**20, "step_s": best_time(step, repeats)}


def main(argv):
  del argv
  res = {}
  for p in POLICIES:
    res[p] = measure(p, _LAYERS.value, _SEQ.value, _BATCH.value, _REPEATS.value)
    print(f"{p:8s} peak {res[p]['peak_mb']:8.1f} MB  step {res[p]['step_s']:.3f} s", flush=True)
  print(json.dumps({
      "policies": res, "layers": _LAYERS.value, "seq_len": _SEQ.value, "batch_size": _BATCH.value,
      "fine_peak_mb": res["fine"]["peak_mb"], "none_peak_mb": res["none"]["peak_mb"],
      "fine_step_s": res["fine"]["step_s"], "full_step_s": res["full"]["step_s"],
      "fine_memory_ratio_vs_none": res["fine"]["peak_mb"] / res["none"]["peak_mb"],
      "fine_time_ratio_vs_full": res["fine"]["step_s"] / res["full"]["step_s"],
  }))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (best of).", lower_bound=1)
  _LAYERS = flags.DEFINE_integer("layers", 6, "Model layers.", lower_bound=1)
  _SEQ = flags.DEFINE_integer("seq_len", 256, "Tokens per sequence.", lower_bound=1)
  _BATCH = flags.DEFINE_integer("batch", 16, "Sequences per step.", lower_bound=1)
  flags.DEFINE_alias("seq", "seq_len")
  confspec.run(main)
