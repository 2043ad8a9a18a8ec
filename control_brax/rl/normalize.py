"""Running observation normalisation (mean and variance over every observation seen, merged per batch)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RunningStats:
  count: jnp.ndarray
  mean: jnp.ndarray
  var: jnp.ndarray


def init_stats(size: int) -> RunningStats:
  return RunningStats(count=jnp.asarray(1e-4, jnp.float32), mean=jnp.zeros(size), var=jnp.ones(size))


def update_stats(s: RunningStats, batch) -> RunningStats:
  """Chan et al.'s parallel merge of (count, mean, var) with a batch of shape (..., size)."""
  x = batch.reshape(-1, batch.shape[-1])
  n = x.shape[0]
  b_mean, b_var = x.mean(0), x.var(0)
  delta = b_mean - s.mean
  total = s.count + n
  mean = s.mean + delta * n / total
  m2 = s.var * s.count + b_var * n + delta**2 * s.count * n / total
  return RunningStats(count=total, mean=mean, var=m2 / total)


def normalize(s: RunningStats, obs, clip: float = 10.0):
  return jnp.clip((obs - s.mean) / jnp.sqrt(s.var + 1e-8), -clip, clip)
