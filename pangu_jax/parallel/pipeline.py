"""Pipeline parallelism over the `stage` axis with a real 1F1B schedule.

Partition (our layout): the MoE layers are the pipelined stack, split evenly over the P stages (stage s holds
MoE layers [s L/P, (s+1) L/P), sharded on the layer axis). The embedding and the dense-first layers run on stage
0 ("pre"), the final norm, head, MTP modules and the losses on stage P-1 ("post"); their weights are replicated
over `stage` and only the owning stage computes with them (a `lax.cond`, so the other stages do not pay).

Schedule: the batch is cut into M micro-batches; `one_f_one_b(P, M)` is the tick table of the classic
non-interleaved 1F1B schedule (stage s runs min(P-s-1, M) warm-up forwards, then alternates one forward and
one backward, then drains the backwards), obtained by list-scheduling each stage's operation order with unit-time
forward and backward ops. Every device runs the same `lax.scan` over ticks and looks up its own action; after each
tick activations move one stage down and input-gradients one stage up (`ppermute`), tagged with their
micro-batch, into P slots (at most P micro-batches are ever in flight on a stage, so slot = micro-batch mod P).

Backward: a stage keeps only each in-flight micro-batch's input and recomputes its forward inside `jax.vjp` when
the backward arrives (1F1B with stage-level recomputation: activation memory is P stage inputs, not M).

Losses are exact, not approximated: cross-entropy, MTP and z-loss are token means and the EP-group balancing
loss is a mean over groups, so the batch loss is the mean of the micro-batch losses as long as a micro-batch holds
whole EP groups (checked); the `global_batch` balancing granularity is not decomposable and is refused with M > 1.
Each stage adds its own layers' share of the balancing and z losses; the gradient of the scalar total reaches each
stage through its own term plus the cotangent from the next stage.

Interleaved virtual stages are not implemented (the simulator models them; `virtual_stages` > 1 is refused here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from confspec import ConfigError
from pangu_jax.model import transformer
from pangu_jax.parallel.mesh import BATCH_AXES
from pangu_jax.train import losses

IDLE, FWD, BWD = 0, 1, 2


def stage_ops(p: int, m: int, s: int) -> list[tuple[int, int]]:
  """The 1F1B operation order of stage s: [(FWD|BWD, micro-batch), ...]."""
  warm = min(p - s - 1, m)
  ops = [(FWD, i) for i in range(warm)]
  for i in range(m - warm):
    ops += [(FWD, warm + i), (BWD, i)]
  ops += [(BWD, i) for i in range(m - warm, m)]
  return ops


def one_f_one_b(p: int, m: int) -> tuple[np.ndarray, np.ndarray]:
  """(action (T, P), micro-batch (T, P)) tick tables of 1F1B with unit-time ops.

  A forward of micro-batch i on stage s waits for its forward on s-1 in an earlier tick; a backward waits for the
  backward on s+1 (on the last stage: for its own forward) in an earlier tick."""
  queues = [stage_ops(p, m, s) for s in range(p)]
  done: dict[tuple[int, int, int], int] = {}
  rows_a, rows_m, tick = [], [], 0
  while any(queues):
    act, mb = [IDLE] * p, [0] * p
    for s in range(p):
      if not queues[s]:
        continue
      kind, i = queues[s][0]
      dep = (FWD, s - 1, i) if kind == FWD else ((BWD, s + 1, i) if s < p - 1 else (FWD, s, i))
      if (kind == FWD and s == 0) or done.get(dep, tick) < tick:
        act[s], mb[s] = kind, i
    for s in range(p):
      if act[s] != IDLE:
        queues[s].pop(0)
        done[(act[s], s, mb[s])] = tick
    rows_a.append(act)
    rows_m.append(mb)
    tick += 1
    if tick > 4 * (m + p) + 8:
      raise RuntimeError("1F1B table did not converge (bug)")
  return np.array(rows_a, np.int32), np.array(rows_m, np.int32)


def bubble_fraction(actions: np.ndarray) -> float:
  """Idle share of the stage-ticks of a schedule ((P-1)/(M+P-1) for 1F1B with equal forward/backward times)."""
  return float(np.mean(actions == IDLE))


def check_pipeline(cfg, layout) -> int:
  """Clear errors for what this pipeline does not support; returns the number of micro-batches."""
  p, m_cfg, t = layout.stage, cfg.model, cfg.train
  n_moe = transformer.num_moe_layers(m_cfg)
  if n_moe % p:
    raise ConfigError(f"config.parallel.stage: {p} must divide the number of MoE layers ({n_moe})")
  if layout.ep > 1 or layout.tensor > 1:
    raise ConfigError("config.parallel.stage: pipeline runs combine with `data` only here (expert = tensor = 1)")
  if cfg.parallel.virtual_stages > 1:
    raise ConfigError("config.parallel.virtual_stages: interleaved stages are modelled by the simulator but not run; "
                      "allowed: 1")
  mb = cfg.parallel.pipeline_microbatches
  local = t.batch_size // layout.batch_shards
  if local % mb:
    raise ConfigError(f"config.parallel.pipeline_microbatches: {mb} must divide the per-replica batch ({local})")
  if mb > 1 and t.aux_loss_granularity == "global_batch":
    raise ConfigError("config.train.aux_loss_granularity: global_batch is not decomposable over micro-batches; "
                      "allowed with a pipeline: micro_batch, ep_group")
  if t.aux_loss_granularity == "ep_group" and (local // mb) % t.ep_group_size:
    raise ConfigError(f"config.train.ep_group_size: {t.ep_group_size} must divide the micro-batch ({local // mb})")
  return mb


def make_grad_fn(cfg, par):
  """grad_fn(params, inputs, targets, poison) -> (loss, LossTerms, routing metrics, grads), pipelined."""
  m_cfg, t = cfg.model, cfg.train
  layout = par.layout
  n_stage = layout.stage
  n_mb = check_pipeline(cfg, layout)
  n_moe = transformer.num_moe_layers(m_cfg)
  share = (n_moe // n_stage) / n_moe  # this stage's fraction of the per-layer means
  weights = jnp.array([1.0, t.mtp_loss_weight, t.aux_loss_alpha, t.z_loss_weight], jnp.float32)
  actions, mbs = (jnp.asarray(a) for a in one_f_one_b(n_stage, n_mb))
  remat = cfg.parallel.remat

  def stage_fn(sp, rp, x_in, tokens, first, last):
    """One stage on one micro-batch -> (output activation, loss terms [ce, mtp, aux, z] of this stage, counts)."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    b, s = inputs.shape
    pos = jnp.broadcast_to(jnp.arange(s), (b, s))

    def pre():
      x = transformer.embed(rp, inputs, m_cfg)
      if "dense_layers" in rp:
        x = transformer._scan_blocks(rp["dense_layers"], x, m_cfg, pos, remat)[0]
      return x

    x = jax.lax.cond(first, pre, lambda: x_in)
    x, stats, _, _ = transformer._scan_blocks(sp, x, m_cfg, pos, remat)
    aux = losses.balance_loss(stats, m_cfg.top_k, t.aux_loss_granularity, t.ep_group_size) * share
    z = losses.z_loss(stats) * share

    def post():
      ce = losses.cross_entropy(transformer.logits_from_hidden(rp, rp["final_norm"], x, m_cfg), targets)
      mtp = jnp.zeros((), jnp.float32)
      if m_cfg.mtp_depth > 0:
        mtp = losses.mtp_loss(transformer.mtp_heads(rp, x, inputs, pos, m_cfg), targets)
      return jnp.stack([ce, mtp])

    head = jax.lax.cond(last, post, lambda: jnp.zeros((2,), jnp.float32))
    return x, jnp.concatenate([head, jnp.stack([aux, z])]), stats.counts.sum(1), stats.dropped.sum()

  def local(sp, rp, tokens):
    stage = jax.lax.axis_index("stage")
    first, last = stage == 0, stage == n_stage - 1
    mb_tokens = tokens.reshape((n_mb, tokens.shape[0] // n_mb) + tokens.shape[1:])
    b, s1 = mb_tokens.shape[1:]
    act_shape = (b, s1 - 1, m_cfg.hidden_size)
    dt = transformer.compute_dtype(m_cfg)
    zeros_like = lambda tree: jax.tree.map(jnp.zeros_like, tree)
    carry = dict(x_slots=jnp.zeros((n_stage,) + act_shape, dt), ct_slots=jnp.zeros((n_stage,) + act_shape, dt),
                 g_sp=zeros_like(sp), g_rp=zeros_like(rp), terms=jnp.zeros((4,), jnp.float32),
                 counts=jnp.zeros((n_moe // n_stage, m_cfg.num_routed_experts), jnp.int32),
                 dropped=jnp.zeros((), jnp.int32))
    no_msg = (jnp.zeros(act_shape, dt), jnp.zeros((), jnp.int32))

    def fwd(c, i):
      x_in = c["x_slots"][i % n_stage]
      y, terms, counts, dropped = stage_fn(sp, rp, x_in, mb_tokens[i], first, last)
      c = dict(c, terms=c["terms"] + terms / n_mb, counts=c["counts"] + counts, dropped=c["dropped"] + dropped)
      return c, (y, jnp.ones((), jnp.int32)), no_msg

    def bwd(c, i):
      x_in = c["x_slots"][i % n_stage]
      f = lambda sp_, rp_, x_: stage_fn(sp_, rp_, x_, mb_tokens[i], first, last)[:2]
      _, vjp = jax.vjp(f, sp, rp, x_in)
      ct_y = jnp.where(last, jnp.zeros(act_shape, dt), c["ct_slots"][i % n_stage])
      g_sp, g_rp, g_x = vjp((ct_y, weights / n_mb))
      c = dict(c, g_sp=jax.tree.map(jnp.add, c["g_sp"], g_sp), g_rp=jax.tree.map(jnp.add, c["g_rp"], g_rp))
      return c, no_msg, (g_x, jnp.ones((), jnp.int32))

    def idle(c, i):
      del i
      return c, no_msg, no_msg

    def tick(c, row):
      act, mb = row
      c, (f_msg, f_ok), (b_msg, b_ok) = jax.lax.switch(act[stage], [idle, fwd, bwd], c, mb[stage])
      down = [(j, j + 1) for j in range(n_stage - 1)]
      up = [(j + 1, j) for j in range(n_stage - 1)]
      f_msg, f_ok, f_mb = (jax.lax.ppermute(a, "stage", down) for a in (f_msg, f_ok, mb[stage]))
      b_msg, b_ok, b_mb = (jax.lax.ppermute(a, "stage", up) for a in (b_msg, b_ok, mb[stage]))
      x_slots = jnp.where(f_ok > 0, c["x_slots"].at[f_mb % n_stage].set(f_msg), c["x_slots"])
      ct_slots = jnp.where(b_ok > 0, c["ct_slots"].at[b_mb % n_stage].set(b_msg), c["ct_slots"])
      return dict(c, x_slots=x_slots, ct_slots=ct_slots), None

    c, _ = jax.lax.scan(tick, carry, (actions, mbs))
    n_data = jax.lax.psum(1, BATCH_AXES)
    g_sp = jax.tree.map(lambda g: jax.lax.psum(g, BATCH_AXES) / n_data, c["g_sp"])
    g_rp = jax.tree.map(lambda g: jax.lax.psum(g, ("stage",) + BATCH_AXES) / n_data, c["g_rp"])
    terms = jax.lax.psum(c["terms"], ("stage",) + BATCH_AXES) / n_data
    counts = jax.lax.psum(c["counts"], BATCH_AXES)
    dropped = jax.lax.psum(c["dropped"], ("stage",) + BATCH_AXES)
    return g_sp, g_rp, terms, counts, dropped

  def grad_fn(params, inputs, targets, poison):
    sp = params["moe_layers"]
    rp = {k: v for k, v in params.items() if k != "moe_layers"}
    tokens = jnp.concatenate([inputs, targets[:, -1:]], axis=1)
    smap = jax.shard_map(
        local, mesh=par.mesh,
        in_specs=(jax.tree.map(lambda _: P("stage"), sp), jax.tree.map(lambda _: P(), rp), P(BATCH_AXES)),
        out_specs=(jax.tree.map(lambda _: P("stage"), sp), jax.tree.map(lambda _: P(), rp), P(), P("stage"), P()),
        check_vma=False)
    g_sp, g_rp, terms, counts, dropped = smap(sp, rp, tokens)
    total = jnp.dot(weights, terms)
    lt = losses.LossTerms(total=total, ce=terms[0], mtp=terms[1], aux=terms[2], z=terms[3])
    load = counts.astype(jnp.float32)
    b, s = inputs.shape
    routing = {"expert_load_imbalance": load.max(-1) / jnp.maximum(load.mean(-1), 1e-9), "expert_load": load,
               "dropped_fraction": dropped / (n_moe * b * s * m_cfg.top_k)}
    return total + poison, lt, routing, dict(g_rp, moe_layers=g_sp)

  return grad_fn
