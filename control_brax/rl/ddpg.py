"""DDPG with TD3's improvements as options, functional: collection + replay updates in one jitted iteration.

    algo = make(env, cfg.ddpg); ts = algo.init(key); ts, metrics = algo.iteration(ts)

An iteration steps `num_envs` worlds `steps_per_iteration` times (uniform random
actions during warm-up, then the actor plus Gaussian exploration noise), writes
the transitions into a ring buffer held in the train state (so checkpoints and
resume carry it), then runs `updates_per_iteration` minibatch updates. TD3
options (`td3=True`): twin critics with the minimum target, actor and target
updates every `policy_delay` critic updates, target policy smoothing noise.
Observations are normalised at update time with the current running stats.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from control_brax.rl import networks as nets
from control_brax.rl import rollout
from control_brax.rl.config import policy_mask
from control_brax.rl.normalize import RunningStats, init_stats, normalize, update_stats
from control_brax.rl.ppo import Algo


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
  opt_state: Any  # (actor optimiser state, critic optimiser state)
  obs_stats: RunningStats
  env_state: Any
  buffer: Buffer
  rng: jax.Array
  env_steps: jax.Array
  updates: jax.Array


def extend_buffer(buf: Buffer, index) -> Buffer:
  """Stored grouped actions copied onto their group's new outputs (PEAD extension)."""
  return buf.replace(action=buf.action[:, jnp.asarray(index)])


def make(env, cfg) -> Algo:
  n, k_steps = cfg.num_envs, cfg.steps_per_iteration
  hidden = tuple(cfg.hidden)
  n_critics = 2 if cfg.td3 else 1
  obs_size, act_size = env.observation_size, env.action_size
  # LCRL (cfg.lcrl_graph): the actor is one sub-network per action component over its connected state components
  # (a constant mask, closed over); the critics stay globally connected (they judge the joint action).
  mask = policy_mask(cfg, obs_size, act_size, "ddpg")
  actor_hidden = (tuple(cfg.lcrl_hidden) or hidden) if mask is not None else hidden
  actor_opt = optax.adam(cfg.actor_lr)
  critic_opt = optax.adam(cfg.critic_lr)

  def norm(stats, obs):
    return normalize(stats, obs) if cfg.normalize_obs else obs

  def actor(layers, obs):
    if mask is not None:
      return jnp.tanh(nets.local_mlp(layers, mask, obs, activation=jax.nn.relu))
    return jnp.tanh(nets.mlp(layers, obs, activation=jax.nn.relu))

  def critic(layers, obs, a):
    return nets.mlp(layers, jnp.concatenate([obs, a], -1), activation=jax.nn.relu)[..., 0]

  def init(key):
    k_a, k_c, k_env, k_rng = jax.random.split(key, 4)
    if mask is not None:
      a = nets.init_local_mlp(k_a, mask, actor_hidden, last_scale=0.1)
    else:
      a = nets.init_mlp(k_a, (obs_size, *hidden, act_size), last_scale=0.1)
    cs = [nets.init_mlp(k, (obs_size + act_size, *hidden, 1)) for k in jax.random.split(k_c, n_critics)]
    params = {"actor": a, "critics": cs, "target_actor": a, "target_critics": cs}
    opt = (actor_opt.init(a), critic_opt.init(cs))
    size = cfg.buffer_size
    buf = Buffer(obs=jnp.zeros((size, obs_size)), action=jnp.zeros((size, act_size)), reward=jnp.zeros(size),
                 next_obs=jnp.zeros((size, obs_size)), done=jnp.zeros(size), ptr=jnp.zeros((), jnp.int32),
                 size=jnp.zeros((), jnp.int32))
    return TrainState(params=params, opt_state=opt, obs_stats=init_stats(obs_size),
                      env_state=rollout.reset(env, k_env, n), buffer=buf, rng=k_rng,
                      env_steps=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32))

  def act(params, stats, obs):
    return actor(params["actor"], norm(stats, obs))

  def critic_loss(cs, params, stats, b, key):
    obs, nxt = norm(stats, b["obs"]), norm(stats, b["next_obs"])
    a_next = actor(params["target_actor"], nxt)
    if cfg.td3:
      noise = jnp.clip(cfg.target_noise * jax.random.normal(key, a_next.shape), -cfg.target_noise_clip,
                       cfg.target_noise_clip)
      a_next = jnp.clip(a_next + noise, -1, 1)
    q_next = jnp.min(jnp.stack([critic(c, nxt, a_next) for c in params["target_critics"]]), axis=0)
    target = jax.lax.stop_gradient(b["reward"] * cfg.reward_scale + cfg.gamma * (1 - b["done"]) * q_next)
    qs = [critic(c, obs, b["action"]) for c in cs]
    return sum(((q - target) ** 2).mean() for q in qs), qs[0].mean()

  def actor_loss(a_layers, params, stats, b):
    obs = norm(stats, b["obs"])
    return -critic(params["critics"][0], obs, actor(a_layers, obs)).mean()

  def update(carry, x):
    params, (a_opt, c_opt), stats, buf = carry
    i, key = x
    k_idx, k_noise = jax.random.split(key)
    idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, jnp.maximum(buf.size, 1))
    b = {"obs": buf.obs[idx], "action": buf.action[idx], "reward": buf.reward[idx], "next_obs": buf.next_obs[idx],
         "done": buf.done[idx]}
    (c_loss, q_mean), g = jax.value_and_grad(critic_loss, has_aux=True)(params["critics"], params, stats, b, k_noise)
    upd, c_opt = critic_opt.update(g, c_opt, params["critics"])
    params = dict(params, critics=optax.apply_updates(params["critics"], upd))
    delay = cfg.policy_delay if cfg.td3 else 1

    def actor_step(operand):
      params, a_opt = operand
      g = jax.grad(actor_loss)(params["actor"], params, stats, b)
      upd, a_opt = actor_opt.update(g, a_opt, params["actor"])
      new_actor = optax.apply_updates(params["actor"], upd)
      soft = lambda t, s: jax.tree.map(lambda x, y: (1 - cfg.tau) * x + cfg.tau * y, t, s)  # noqa: E731
      params = dict(params, actor=new_actor, target_actor=soft(params["target_actor"], new_actor),
                    target_critics=soft(params["target_critics"], params["critics"]))
      return params, a_opt

    params, a_opt = jax.lax.cond(i % delay == 0, actor_step, lambda o: o, (params, a_opt))
    return (params, (a_opt, c_opt), stats, buf), {"critic_loss": c_loss, "q_mean": q_mean}

  def iteration(ts: TrainState):
    rng, k_roll, k_upd = jax.random.split(ts.rng, 3)
    params, stats = ts.params, ts.obs_stats
    warm = ts.env_steps < cfg.warmup_steps

    def env_step(env_state, k):
      k_a, k_r = jax.random.split(k)
      obs = env_state.obs
      a_pi = act(params, stats, obs)
      noise = cfg.exploration_noise * jax.random.normal(k_a, a_pi.shape)
      a_rand = jax.random.uniform(k_a, a_pi.shape, minval=-1, maxval=1)
      action = jnp.where(warm, a_rand, jnp.clip(a_pi + noise, -1, 1))
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

  return Algo(init=init, iteration=iteration, act=act, optimizer=(actor_opt, critic_opt),
              steps_per_iteration=n * k_steps)
