"""Pangu Ultra MoE as pure functions over parameter pytrees."""

from pangu_jax.model.decode import generate, speculative_generate
from pangu_jax.model.moe import MoeStats
from pangu_jax.model.transformer import ModelOutput, forward, forward_cached, init_cache, init_params

__all__ = [
    "MoeStats", "ModelOutput", "forward", "forward_cached", "generate", "init_cache", "init_params",
    "speculative_generate",
]
