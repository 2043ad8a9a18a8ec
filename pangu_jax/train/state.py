"""The train state and the jitted train / eval steps (pure functions of state and batch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from pangu_jax.model import transformer
from pangu_jax.train import losses
from pangu_jax.train.optim import make_optimizer, schedule


def init_train_state(cfg) -> dict:
  params = transformer.init_params(jax.random.key(cfg.train.seed), cfg.model)
  return {
      "params": params,
      "opt_state": make_optimizer(cfg.train).init(params),
      "step": jnp.zeros((), jnp.int32),
      "skips": jnp.zeros((), jnp.int32),  # consecutive non-finite steps
      "total_skips": jnp.zeros((), jnp.int32),
  }


def abstract_train_state(cfg):
  return jax.eval_shape(lambda: init_train_state(cfg))


def make_train_step(cfg):
  """train_step(state, tokens (B, S+1), poison) -> (state, metrics). `poison` is added to the loss (0 or NaN,
  for fault-injection tests); a non-finite loss or gradient norm skips the update and is counted."""
  m, t = cfg.model, cfg.train
  opt = make_optimizer(t)
  lr_at = schedule(t)
  remat = cfg.parallel.remat

  def loss_fn(params, inputs, targets, poison):
    out = transformer.forward(params, inputs, m, remat=remat)
    terms = losses.total_loss(out, targets, m, t)
    return terms.total + poison, (terms, out.stats)

  def train_step(state, tokens, poison):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    params = state["params"]
    (loss, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, inputs, targets, poison)
    gnorm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    updates, opt_state = opt.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    routing = losses.routing_metrics(stats, m.top_k)
    if t.bias_update_rate > 0 and stats is not None and m.router_bias:
      moe = new_params["moe_layers"]["moe"]
      moe["router_bias"] = losses.aux_free_bias_update(moe["router_bias"], routing["expert_load"], t.bias_update_rate)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    state = {
        "params": keep(new_params, params),
        "opt_state": keep(opt_state, state["opt_state"]),
        "step": state["step"] + 1,  # a skipped step still consumes its batch
        "skips": jnp.where(ok, 0, state["skips"] + 1),
        "total_skips": state["total_skips"] + (~ok).astype(jnp.int32),
    }
    metrics = {
        "loss": loss, "ce": terms.ce, "mtp_loss": terms.mtp, "aux_loss": terms.aux, "z_loss": terms.z,
        "grad_norm": gnorm, "lr": lr_at(state["step"] - 1), "skipped": ~ok,
    }
    if routing:
      metrics["expert_load_imbalance"] = routing["expert_load_imbalance"]
      metrics["dropped_fraction"] = routing["dropped_fraction"]
      metrics["expert_load"] = routing["expert_load"]
    return state, metrics

  return jax.jit(train_step, donate_argnums=(0,))


def make_eval_step(cfg):
  """eval_step(params, tokens (B, S+1)) -> mean next-token CE (nats per token)."""

  def eval_step(params, tokens):
    out = transformer.forward(params, tokens[:, :-1], cfg.model)
    return losses.cross_entropy(out.logits, tokens[:, 1:])

  return jax.jit(eval_step)
