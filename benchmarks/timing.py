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
