"""Shared timing helper for the benchmark scripts (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import time


def best_time(fn, repeats: int) -> float:
  """Calls fn once to warm up (compile), then returns the best of `repeats` wall times in seconds."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def time_train_step(cfg, repeats: int) -> tuple[float, float]:
  """(best step seconds, first-call seconds incl. compilation) of `cfg`'s jitted train step on one batch of random
  tokens, on this process's devices."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from pangu_jax.parallel import runtime  # noqa: PLC0415
  from pangu_jax.train.state import init_sharded_train_state, make_train_step  # noqa: PLC0415

  t = cfg.train
  par = runtime.setup(cfg)
  state = init_sharded_train_state(cfg, par)
  step = make_train_step(cfg, par)
  toks = jax.random.randint(jax.random.key(0), (t.batch_size, t.seq_len + 1), 0, cfg.model.vocab_size)
  t0 = time.perf_counter()
  state, m = step(state, toks, np.float32(0))
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, m = step(state, toks, np.float32(0))
    jax.block_until_ready(m)
    best = min(best, time.perf_counter() - t0)
  return best, compile_s
