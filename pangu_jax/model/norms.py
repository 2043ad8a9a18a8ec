"""RMSNorm (computed in fp32 whatever the activation dtype)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, gamma: jax.Array, eps: float) -> jax.Array:
  """y = x / sqrt(mean(x^2) + eps) * gamma, over the last axis; returns x's dtype.

  Kept as its own function (and named scope) so the exporter can map it to
  Ascend's fused `npu_rms_norm`.
  """
  with jax.named_scope("rms_norm"):
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (y * gamma.astype(jnp.float32)).astype(x.dtype)
