"""Optimiser: AdamW with linear warmup + cosine decay, global-norm clipping and a weight-decay mask.

Weight decay applies to weight matrices only: not to norm gammas (`*norm`) and not to the router's selection
bias (which is not trained by gradient at all: it only moves by the aux-loss-free update). Master weights
are the params' dtype (`config.model.param_dtype`, fp32 by default); `config.model.dtype = "bfloat16"` then
gives bf16 compute with fp32 master weights and optimiser state.
"""

from __future__ import annotations

import jax
import optax


def schedule(t) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=t.learning_rate, warmup_steps=t.warmup_steps,
      decay_steps=max(t.steps, t.warmup_steps + 1), end_value=t.learning_rate * t.min_lr_ratio)


def decay_mask(params):
  def keep(path, _):
    name = str(path[-1].key) if hasattr(path[-1], "key") else ""
    return not (name.endswith("norm") or name == "router_bias")

  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(t) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(t.grad_clip),
      optax.adamw(schedule(t), b1=t.b1, b2=t.b2, weight_decay=t.weight_decay, mask=decay_mask),
  )
