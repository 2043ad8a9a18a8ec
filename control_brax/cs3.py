"""CS3 connection scores of an assembly env: which action component drives which state component.

`estimate(cfg)` takes an RL config (configs/assembly/*.py): its `env` section defines
the system and its `cs3` section the estimate (samples, batch, state pool, z, tau).
The result holds `scores`, `stderr`, `graph` (action rows x state columns), names,
the thresholds and the convergence history. The binary that writes it to a directory
with its heat maps is `python -m experiments.cs3`.

The estimator is control_brax.shapley's (generic in the batched step function);
this module supplies the env's pieces, our definitions:
* states: a pool of `cs3.pool` env states, each taken at a uniform control step
  in [0, pool_steps) of an episode from the geometry's evaluation distribution
  driven by uniform random actions in +- rollout_action_scale (the compliance
  controller runs underneath), so free-space, contact and jammed states all
  occur in the proportions exploration visits them; worlds that ended earlier
  contribute their last live state;
* probe actions: uniform in [-1, 1] per component (the policy's action range);
  baseline: a zero action (no pose increment, the controller alone);
* state components: the policy's observation after `horizon` control steps
  (F/T and pose error, scaled as the policy sees them).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import ml_collections

from control_brax import shapley
from control_brax.config import POSE_AXES, parse_axes, parse_groups

OBS_NAMES = ("Fx", "Fy", "Fz", "Tx", "Ty", "Tz", "ex", "ey", "ez", "erx", "ery", "erz")
VEL_NAMES = ("vx", "vy", "vz", "vrx", "vry", "vrz")


def names(env_cfg) -> tuple[list[str], list[str]]:
  """(action component names, state component names) of an `env` section."""
  dims = parse_axes(env_cfg.action_dims, "env.action_dims")
  groups = parse_groups(env_cfg.action_groups, dims, "env.action_groups")
  acts = ["+".join(POSE_AXES[dims[i]] for i in g) for g in groups]
  if env_cfg.gain_action:
    acts += [f"K_{POSE_AXES[d]}" for d in dims]
  obs = list(OBS_NAMES) + (list(VEL_NAMES) if env_cfg.obs_velocities else [])
  return acts, obs


def collect_states(env, key, n: int, max_steps: int, action_scale: float):
  """n env states, world b's taken at step t_b ~ U{0..max_steps-1} of a random-action episode (see module doc)."""
  k_reset, k_t, k_a = jax.random.split(key, 3)
  state = jax.vmap(env.reset)(jax.random.split(k_reset, n))
  stop = jax.random.randint(k_t, (n,), 0, max_steps)

  def body(carry, xs):
    s, saved, alive = carry
    t, k = xs
    keep = alive & (t <= stop)  # still live and not past its stopping time: this is the latest candidate
    saved = jax.tree.map(lambda a, b: jnp.where(keep.reshape((n,) + (1,) * (a.ndim - 1)), a, b), s, saved)
    a = action_scale * jax.random.uniform(k, (n, env.action_size), minval=-1.0, maxval=1.0)
    nxt = jax.vmap(env.step)(s, a)
    alive = alive & (nxt.done == 0)
    return (nxt, saved, alive), None

  carry = (state, state, jnp.ones(n, bool))
  (_, saved, _), _ = jax.lax.scan(body, carry, (jnp.arange(max_steps), jax.random.split(k_a, max_steps)))
  return saved


def effect_fn(env, horizon: int):
  """Batched (states, actions) -> observation after holding each action for `horizon` control steps."""

  def one(s, a):
    s = jax.lax.fori_loop(0, horizon, lambda _, x: env.step(x, a), s)
    return s.obs

  return jax.vmap(one)


def estimate(cfg, progress: bool = True) -> dict:
  """Estimates CS3 on the config's env; returns the JSON-able result (scores, stderr, graph, names, history)."""
  from control_brax.envs import PegInHoleEnv  # noqa: PLC0415
  from control_brax.rl.config import validate_rl  # noqa: PLC0415

  cfg = validate_rl(ml_collections.ConfigDict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg))
  c = cfg.cs3
  env = PegInHoleEnv(cfg.env)
  act_names, obs_names = names(cfg.env)
  t0 = time.time()
  key = jax.random.PRNGKey(c.seed)
  k_pool, k_est = jax.random.split(key)
  collect = jax.jit(lambda k: collect_states(env, k, c.pool, c.pool_steps, c.rollout_action_scale))
  pool = collect(k_pool)
  pool_s = time.time() - t0

  def sample_fn(k, batch):
    k_i, k_a = jax.random.split(k)
    idx = jax.random.randint(k_i, (batch,), 0, c.pool)
    states = jax.tree.map(lambda x: x[idx], pool)
    actions = jax.random.uniform(k_a, (batch, env.action_size), minval=-1.0, maxval=1.0)
    return states, actions

  bar = None
  if progress:
    try:
      from tqdm import tqdm  # noqa: PLC0415

      bar = tqdm(total=c.samples, unit="sample", desc=f"CS3 {cfg.env.peg}", file=sys.stderr, dynamic_ncols=True)
    except ImportError:
      bar = None

  def prog(done, total):
    if bar is not None:
      bar.n = min(done * c.batch, c.samples)
      bar.refresh()

  phi, se, history = shapley.estimate(effect_fn(env, c.horizon), sample_fn, env.action_size, k_est, c.samples,
                                      c.batch, progress=prog)
  if bar is not None:
    bar.close()
  graph = shapley.connection_graph(phi, se, c.z, c.tau)
  result = {"scores": phi.tolist(), "stderr": se.tolist(), "graph": graph.tolist(), "actions": act_names,
            "states": obs_names, "peg": cfg.env.peg, "compliance": bool(cfg.env.compliance),
            "rule": {"z": c.z, "tau": c.tau, "text": "edge iff phi > z * stderr and phi > tau * max over the "
                     "action components of phi on the same state component"},
            "samples": int(history[-1]["samples"]), "pool": c.pool, "horizon": c.horizon,
            "wall_s": time.time() - t0, "pool_wall_s": pool_s, "history": history}
  return result
