"""Grouped (per-expert) matmuls for the dropless MoE."""

from pangu_jax.kernels.grouped_matmul import grouped_matmul

__all__ = ["grouped_matmul"]
