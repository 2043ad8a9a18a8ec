"""The off-policy machinery DDPG/TD3 and SAC share: a ring buffer in the train state, collection, replay updates.

    iteration = make_iteration(env, cfg, explore, update)

An iteration steps `num_envs` worlds `steps_per_iteration` times (uniform random actions during warm-up, then
`explore(params, stats, obs, key)`), writes the transitions into the ring buffer held in the train state (so
checkpoints and resume carry it), then runs `updates_per_iteration` minibatch updates through `update`, a
`lax.scan` body over ((params, opt_state, stats, buffer), (update index, key)) returning its carry and a dict
of figures averaged into the iteration's metrics. Nothing is learnt before `warmup_steps` env steps.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from control_brax.rl import rollout
from control_brax.rl.normalize import RunningStats, update_stats


@struct.dataclass
class Buffer:
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  done: jax.Array
  ptr: jax.Array
  size: jax.Array


@struct.dataclass
class TrainState:
  params: Any
  opt_state: Any  # one optimiser state per optimised part (a tuple)
  obs_stats: RunningStats
  env_state: Any
  buffer: Buffer
  rng: jax.Array
  env_steps: jax.Array
  updates: jax.Array


def init_buffer(size: int, obs_size: int, act_size: int) -> Buffer:
  return Buffer(obs=jnp.zeros((size, obs_size)), action=jnp.zeros((size, act_size)), reward=jnp.zeros(size),
                next_obs=jnp.zeros((size, obs_size)), done=jnp.zeros(size), ptr=jnp.zeros((), jnp.int32),
                size=jnp.zeros((), jnp.int32))


def extend_buffer(buf: Buffer, index) -> Buffer:
  """Stored grouped actions copied onto their group's new outputs (PEAD extension)."""
  return buf.replace(action=buf.action[:, jnp.asarray(index)])


def sample(buf: Buffer, key, batch_size: int) -> dict:
  """A uniform minibatch of stored transitions."""
  idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.size, 1))
  return {"obs": buf.obs[idx], "action": buf.action[idx], "reward": buf.reward[idx], "next_obs": buf.next_obs[idx],
          "done": buf.done[idx]}


def soft_update(target, source, tau: float):
  """Polyak averaging of target networks."""
  return jax.tree.map(lambda t, s: (1 - tau) * t + tau * s, target, source)


def make_iteration(env, cfg, explore, update):
  """The jit-able iteration `ts -> (ts, metrics)` of an off-policy algorithm (see the module docstring)."""
  n, k_steps = cfg.num_envs, cfg.steps_per_iteration

  def iteration(ts: TrainState):
    rng, k_roll, k_upd = jax.random.split(ts.rng, 3)
    params, stats = ts.params, ts.obs_stats
    warm = ts.env_steps < cfg.warmup_steps

    def env_step(env_state, k):
      k_a, k_r = jax.random.split(k)
      obs = env_state.obs
      a_pi = explore(params, stats, obs, k_a)
      a_rand = jax.random.uniform(k_a, a_pi.shape, minval=-1, maxval=1)
      action = jnp.where(warm, a_rand, a_pi)
      env_state, tr = rollout.step(env, env_state, action, k_r)
      return env_state, {"obs": obs, "action": action, "reward": tr.reward, "next_obs": tr.obs, "done": tr.done,
                         "success": tr.metrics.get("success", jnp.zeros_like(tr.reward))}

    env_state, traj = jax.lax.scan(env_step, ts.env_state, jax.random.split(k_roll, k_steps))
    flat = jax.tree.map(lambda x: x.reshape((k_steps * n,) + x.shape[2:]), traj)
    buf = ts.buffer
    idx = (buf.ptr + jnp.arange(k_steps * n)) % cfg.buffer_size
    buf = buf.replace(obs=buf.obs.at[idx].set(flat["obs"]), action=buf.action.at[idx].set(flat["action"]),
                      reward=buf.reward.at[idx].set(flat["reward"]), next_obs=buf.next_obs.at[idx].set(
                          flat["next_obs"]), done=buf.done.at[idx].set(flat["done"]),
                      ptr=(buf.ptr + k_steps * n) % cfg.buffer_size,
                      size=jnp.minimum(buf.size + k_steps * n, cfg.buffer_size))
    stats = update_stats(stats, flat["obs"]) if cfg.normalize_obs else stats
    env_steps = ts.env_steps + k_steps * n
    learn = env_steps >= cfg.warmup_steps
    keys = jax.random.split(k_upd, cfg.updates_per_iteration)
    steps = ts.updates + jnp.arange(cfg.updates_per_iteration)
    (new_params, new_opt, _, _), info = jax.lax.scan(update, (params, ts.opt_state, stats, buf), (steps, keys))
    params = jax.tree.map(lambda a, b: jnp.where(learn, a, b), new_params, params)
    opt = jax.tree.map(lambda a, b: jnp.where(learn, a, b), new_opt, ts.opt_state)
    dones = traj["done"].sum()
    metrics = {k: v.mean() for k, v in info.items()}
    metrics.update(reward=traj["reward"].mean(), episodes=dones,
                   train_success_rate=traj["success"].sum() / jnp.maximum(dones, 1.0))
    ts = ts.replace(params=params, opt_state=opt, obs_stats=stats, env_state=env_state, buffer=buf, rng=rng,
                    env_steps=env_steps, updates=ts.updates + jnp.where(learn, cfg.updates_per_iteration, 0))
    return ts, metrics

  return iteration
