"""RMSNorm (computed in fp32 whatever the activation dtype)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pangu_jax.model.regions import region


def _rms_norm(x, gamma, *, eps):
  xf = x.astype(jnp.float32)
  y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  return (y * gamma.astype(jnp.float32)).astype(x.dtype)


def rms_norm(x: jax.Array, gamma: jax.Array, eps: float) -> jax.Array:
  """y = x / sqrt(mean(x^2) + eps) * gamma, over the last axis; returns x's dtype.

  A named region: the exporter can lower it to Ascend's fused `npu_rms_norm`.
  """
  return region("rms_norm", _rms_norm, eps=float(eps))(x, gamma)
