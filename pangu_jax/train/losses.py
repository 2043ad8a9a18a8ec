"""Training losses: next-token CE, MTP CE, load-balancing aux loss (3 granularities), router z-loss.

Load-balancing loss (our definition; the paper does not publish its normalisation).
For MoE layer l and a group G of sequences with T_G tokens,
    f_i = E / (K T_G) * #assignments of group G to expert i      (1 for each i under perfect balance)
    P_i = mean over the tokens of G of s_i / sum_j s_j           (normalised router score)
    L_aux = alpha * mean over (layers, groups) of sum_i f_i P_i   (alpha = 1 under perfect balance)
The granularity sets G (paper: EP group is best, alpha = 1e-2):
    micro_batch   each sequence on its own: every micro-batch must be balanced;
    ep_group      `ep_group_size` consecutive sequences (on one device, a configured slice of the batch standing
                  in for the tokens of one expert-parallel group);
    global_batch  the whole batch of the step.
f is counted, not differentiated; the gradient flows through P.

Router z-loss (ST-MoE): mean over tokens and layers of logsumexp(router logits)^2.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pangu_jax.model.moe import MoeStats
from pangu_jax.model.transformer import ModelOutput


class LossTerms(NamedTuple):
  total: jax.Array
  ce: jax.Array
  mtp: jax.Array
  aux: jax.Array
  z: jax.Array


def cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean token CE in nats; logits (..., V) fp32, targets (...) int."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  if mask is None:
    return jnp.mean(nll)
  return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1)


def mtp_loss(mtp_logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean over depths of the CE of depth j, which at position i predicts targets[i + j + 1]."""
  depth, _, s, _ = mtp_logits.shape
  losses = []
  for j in range(depth):
    shifted = jnp.roll(targets, -(j + 1), axis=1)
    mask = (jnp.arange(s) < s - j - 1).astype(jnp.float32)[None, :]
    losses.append(cross_entropy(mtp_logits[j], shifted, jnp.broadcast_to(mask, shifted.shape)))
  return jnp.mean(jnp.stack(losses))


def group_size(granularity: str, batch: int, ep_group_size: int) -> int:
  return {"micro_batch": 1, "ep_group": ep_group_size, "global_batch": batch}[granularity]


def balance_loss(stats: MoeStats, top_k: int, granularity: str, ep_group_size: int) -> jax.Array:
  """sum_i f_i P_i averaged over MoE layers and groups (multiply by alpha outside). stats stacked (L, B, ...)."""
  n_layers, b, s, e = stats.scores.shape
  g = group_size(granularity, b, ep_group_size)
  counts = stats.counts.reshape(n_layers, b // g, g, e).sum(2).astype(jnp.float32)
  f = counts * e / (top_k * g * s)
  p = stats.scores / (jnp.sum(stats.scores, axis=-1, keepdims=True) + 1e-20)
  p = p.reshape(n_layers, b // g, g * s, e).mean(2)
  return jnp.mean(jnp.sum(jax.lax.stop_gradient(f) * p, axis=-1))


def z_loss(stats: MoeStats) -> jax.Array:
  return jnp.mean(jax.nn.logsumexp(stats.logits, axis=-1) ** 2)


def total_loss(out: ModelOutput, targets: jax.Array, model_cfg, train_cfg) -> LossTerms:
  ce = cross_entropy(out.logits, targets)
  zero = jnp.zeros((), jnp.float32)
  mtp = mtp_loss(out.mtp_logits, targets) if out.mtp_logits is not None else zero
  aux = z = zero
  if out.stats is not None:
    aux = balance_loss(out.stats, model_cfg.top_k, train_cfg.aux_loss_granularity, train_cfg.ep_group_size)
    z = z_loss(out.stats)
  total = ce + train_cfg.mtp_loss_weight * mtp + train_cfg.aux_loss_alpha * aux + train_cfg.z_loss_weight * z
  return LossTerms(total=total, ce=ce, mtp=mtp, aux=aux, z=z)


def routing_metrics(stats: MoeStats | None, top_k: int) -> dict:
  """Per-layer expert load imbalance (max/mean of assignments) and the dropped-assignment fraction."""
  if stats is None:
    return {}
  load = stats.counts.sum(1).astype(jnp.float32)  # (L, E)
  imbalance = load.max(-1) / jnp.maximum(load.mean(-1), 1e-9)
  _, b, s, _ = stats.scores.shape
  dropped = stats.dropped.sum() / (load.shape[0] * b * s * top_k)
  return {"expert_load_imbalance": imbalance, "expert_load": load, "dropped_fraction": dropped}


def aux_free_bias_update(bias: jax.Array, load: jax.Array, rate: float) -> jax.Array:
  """DeepSeek-V3's aux-loss-free balancing: raise the bias of under-loaded experts, lower over-loaded ones."""
  return bias + rate * jnp.sign(load.mean(-1, keepdims=True) - load)
