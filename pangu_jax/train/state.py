"""The train state and the jitted train / eval steps (pure functions of state and batch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from pangu_jax.model import transformer
from pangu_jax.train import losses
from pangu_jax.train.optim import make_optimizer, schedule


def init_train_state(cfg) -> dict:
  return train_state_from_params(cfg, transformer.init_params(jax.random.key(cfg.train.seed), cfg.model))


def train_state_from_params(cfg, params) -> dict:
  """A step-0 train state around given parameters (fresh optimiser state): what an imported checkpoint starts
  fine-tuning from."""
  extra = {}
  if cfg.parallel.placement_every > 0 and transformer.num_moe_layers(cfg.model) > 0:
    extra["load_ema"] = jnp.zeros((transformer.num_moe_layers(cfg.model), cfg.model.num_routed_experts), jnp.float32)
  return extra | {
      "params": params,
      "opt_state": make_optimizer(cfg.train).init(params),
      "step": jnp.zeros((), jnp.int32),
      "skips": jnp.zeros((), jnp.int32),  # consecutive non-finite steps
      "total_skips": jnp.zeros((), jnp.int32),
  }


def train_state_shapes(cfg):
  """Shapes and dtypes of the train state (no shardings: what `parallel.runtime.setup` derives them for)."""
  return jax.eval_shape(lambda: init_train_state(cfg))


def abstract_train_state(cfg, par):
  """Shapes, dtypes and shardings of the train state over `par` (a `parallel.runtime.Parallel`): what a
  checkpoint restores into."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), train_state_shapes(cfg),
                      par.state_shardings)


def inference_train_state(cfg):
  """Shapes and dtypes of the train state on this process's first device, without a mesh: what inference restores
  a checkpoint of any layout into, so that it (and the exporter's tracing) sees plain single-device arrays."""
  one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one), train_state_shapes(cfg))


def init_sharded_train_state(cfg, par):
  """The same values as `init_train_state`, created directly in their shards over `par`'s mesh."""
  return jax.jit(lambda: init_train_state(cfg), out_shardings=par.state_shardings)()


def make_train_step(cfg, par):
  """train_step(state, tokens (B, S+1), poison) -> (state, metrics). `poison` is added to the loss (0 or NaN,
  for fault-injection tests); a non-finite loss or gradient norm skips the update and is counted.

  The step runs over `par`'s mesh (a `parallel.runtime.Parallel`, one device or many): state and batch in their
  shardings, the routed experts through `par.dispatch`; the function computed is the same on any layout."""
  m, t = cfg.model, cfg.train
  dispatch = par.dispatch
  opt = make_optimizer(t)
  lr_at = schedule(t)
  remat = cfg.parallel.remat

  def loss_fn(params, inputs, targets, poison):
    out = transformer.forward(params, inputs, m, remat=remat, dispatch=dispatch)
    terms = losses.total_loss(out, targets, m, t)
    return terms.total + poison, (terms, out.stats)

  def grad_fn(params, inputs, targets, poison):
    """-> (loss, LossTerms, routing metrics, grads): the part a pipeline schedule replaces."""
    (loss, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, inputs, targets, poison)
    return loss, terms, losses.routing_metrics(stats, m.top_k), grads

  if par.layout.stage > 1:
    from pangu_jax.parallel import pipeline  # noqa: PLC0415 (only pipelined runs need it)

    grad_fn = pipeline.make_grad_fn(cfg, par)

  def train_step(state, tokens, poison):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    params = state["params"]
    loss, terms, routing, grads = grad_fn(params, inputs, targets, poison)
    gnorm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    updates, opt_state = opt.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    if t.bias_update_rate > 0 and routing and m.router_bias:
      moe = new_params["moe_layers"]["moe"]
      moe["router_bias"] = losses.aux_free_bias_update(moe["router_bias"], routing["expert_load"], t.bias_update_rate)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    extra = {}
    if "load_ema" in state:  # the expert-load predictor of dynamic placement
      theta = cfg.parallel.placement_theta
      extra["load_ema"] = theta * state["load_ema"] + (1 - theta) * routing["expert_load"]
    state = extra | {
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
    # The new state in the state's shardings (so that its buffers can be donated step after step). A constraint,
    # not `out_shardings`: with those XLA's CPU backend cannot compile the `offload` remat policy (it annotates the
    # outputs' memory space with a custom call it has no implementation for).
    return jax.lax.with_sharding_constraint(state, par.state_shardings), metrics

  return jax.jit(train_step, donate_argnums=(0,), in_shardings=(par.state_shardings, par.batch_sharding, None))


def make_eval_step(cfg, par):
  """eval_step(params, tokens (B, S+1)) -> mean next-token CE (nats per token), over `par`'s mesh."""
  dispatch = par.dispatch

  def eval_step(params, tokens):
    out = transformer.forward(params, tokens[:, :-1], cfg.model, dispatch=dispatch)
    return losses.cross_entropy(out.logits, tokens[:, 1:])

  return jax.jit(eval_step, in_shardings=(par.state_shardings["params"], par.batch_sharding))
