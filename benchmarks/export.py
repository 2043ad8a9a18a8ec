"""Export time, and the exported torch module's CPU forward throughput against JAX's jitted forward.

Tiny preset, fresh weights, batch 8 x 128 tokens, fp32, forward only, best of N after warm-up; both on
this machine's CPU in the same run, with the outputs compared first.
Last line: JSON with export_s, torch_tokens_per_s, jax_tokens_per_s, ratio (torch / jax), max_rel_err.
Usage: python benchmarks/export.py [--batch=8] [--seq_len=128] [--repeats=5]
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import flags  # noqa: E402
from timing import best_time  # noqa: E402

import confspec  # noqa: E402
from npu_backend.export.model import export_model, model_forward  # noqa: E402
from npu_backend.runtime import build_module  # noqa: E402
from npu_backend.runtime.graph import to_torch  # noqa: E402
from pangu_jax.model import transformer  # noqa: E402
from pangu_jax.presets import load_preset  # noqa: E402


def main(argv):
  del argv
  torch.set_num_threads(os.cpu_count() or 1)
  cfg = load_preset("tiny")
  params = transformer.init_params(jax.random.key(0), cfg.model)
  toks = np.asarray(jax.random.randint(jax.random.key(1), (_BATCH.value, _SEQ.value), 0, 256), np.int32)
  t0 = time.perf_counter()
  graph = export_model(cfg.model, params, _BATCH.value, _SEQ.value)
  gm = build_module(graph.to_json(), {k: to_torch(v) for k, v in graph.tensors.items()})
  export_s = time.perf_counter() - t0
  print(f"export: {export_s:.2f}s, {len(graph.nodes)} nodes", flush=True)
  fwd = jax.jit(model_forward(cfg.model))
  tt = torch.from_numpy(toks)
  with torch.no_grad():
    got = gm(tt)
  want = fwd(params, toks)
  rel = max(float(np.linalg.norm(g.numpy() - np.asarray(w)) / np.linalg.norm(np.asarray(w)))
            for g, w in zip(got, want))
  print(f"max relative L2 error torch vs JAX: {rel:.2e}", flush=True)

  def run_torch():
    with torch.no_grad():
      gm(tt)

  t_torch = best_time(run_torch, _REPEATS.value)
  t_jax = best_time(lambda: jax.block_until_ready(fwd(params, toks)), _REPEATS.value)
  n = _BATCH.value * _SEQ.value
  print(f"torch fx forward: {n / t_torch:9.0f} tokens/s;  JAX jit forward: {n / t_jax:9.0f} tokens/s", flush=True)
  print(json.dumps({"export_s": export_s, "nodes": len(graph.nodes), "torch_tokens_per_s": n / t_torch,
                    "jax_tokens_per_s": n / t_jax, "ratio": t_jax / t_torch, "max_rel_err": rel}))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _BATCH = flags.DEFINE_integer("batch", 8, "Batch size of the exported graph.", lower_bound=1)
  _SEQ = flags.DEFINE_integer("seq_len", 128, "Sequence length of the exported graph.", lower_bound=1)
  _REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (best of).", lower_bound=1)
  confspec.run(main)
