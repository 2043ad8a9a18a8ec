"""The hardware peak for MFU. On CPU: a measured fp32 2048^3 matmul, cached per machine and JAX version.

A measurement taken while something else loads the machine is too low and would inflate every MFU after it,
so the cache keeps the highest measurement seen (`record_peak` adds one; the benchmarks call it).
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp

from runkit.atomic import atomic_write_json

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pangu_jax", "peak_flops.json")
# Datasheet bf16 dense peaks for accelerators (FLOP/s), used when running there.
KNOWN_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def measure_matmul_flops(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
  """Best-of-`repeats` FLOP/s of an n^3 matmul under jit."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best


def peak_flops() -> tuple[float, str]:
  """(FLOP/s, source). Accelerators: datasheet; CPU: measured once and cached in ~/.cache/pangu_jax."""
  dev = jax.devices()[0]
  for name, peak in KNOWN_PEAKS.items():
    if name in getattr(dev, "device_kind", ""):
      return peak, f"datasheet {name} bf16"
  try:
    with open(CACHE) as f:
      cached = json.load(f)
    if _key() in cached:
      return cached[_key()], "measured fp32 2048^3 matmul (cached, highest seen)"
  except (OSError, ValueError):
    pass
  return record_peak(measure_matmul_flops()), "measured fp32 2048^3 matmul"


def _key() -> str:
  dev = jax.devices()[0]
  return f"{platform.node()}|{platform.processor()}|{os.cpu_count()}|jax{jax.__version__}|{dev.platform}"


def record_peak(flops: float) -> float:
  """Adds a CPU measurement to the cache; returns the cached peak (the highest seen)."""
  try:
    with open(CACHE) as f:
      cached = json.load(f)
  except (OSError, ValueError):
    cached = {}
  cached[_key()] = max(flops, cached.get(_key(), 0.0))
  try:
    atomic_write_json(CACHE, cached)
  except OSError:  # a read-only or missing home: the measurement is used, just not remembered
    pass
  return cached[_key()]
