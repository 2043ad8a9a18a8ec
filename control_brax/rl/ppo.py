"""PPO, functional: one training iteration (rollout, GAE, epochs of minibatch updates) is one jitted function.

    algo = make(env, cfg.ppo)          # closures over the env and the static hyperparameters
    ts = algo.init(key)                # TrainState (params, optimiser, obs stats, env batch, rng, counters)
    ts, metrics = algo.iteration(ts)   # num_envs x rollout_len env steps, then the updates

Independent seeds: `jax.vmap(algo.init)(keys)` and `jax.vmap(algo.iteration)`
run several seeds inside one compiled program (control_brax.train does this).
The policy is Gaussian over the env's actions (clipped by the env to [-1, 1]) on
normalised observations; the value network is separate. Truncation is treated
as termination (the usual simplification; episodes here end by success,
failure, or a time limit the agent can see through the depth observation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from control_brax.rl import networks as nets
from control_brax.rl import rollout
from control_brax.rl.config import policy_mask
from control_brax.rl.normalize import RunningStats, init_stats, normalize, update_stats


@struct.dataclass
class TrainState:
  params: Any  # {"policy": ..., "value": ...}
  opt_state: Any
  obs_stats: RunningStats
  env_state: Any
  rng: jax.Array
  env_steps: jax.Array
  updates: jax.Array


@dataclasses.dataclass(frozen=True)
class Algo:
  init: Callable
  iteration: Callable
  act: Callable  # (params, obs_stats, obs) -> deterministic action
  optimizer: Any
  steps_per_iteration: int


def gae_advantages(reward, value, done, last_value, gamma: float, lam: float):
  """Generalised advantage estimates over a (T, N) rollout; `done[t]` ends the episode after step t."""

  def body(carry, x):
    adv, next_v = carry
    r, v, d = x
    delta = r + gamma * next_v * (1 - d) - v
    adv = delta + gamma * lam * (1 - d) * adv
    return (adv, v), adv

  return jax.lax.scan(body, (jnp.zeros_like(last_value), last_value), (reward, value, done), reverse=True)[1]


def make(env, cfg) -> Algo:
  """PPO for `env` (a control_brax env) with hyperparameters `cfg` (the config's `ppo` section)."""
  n, t_len = cfg.num_envs, cfg.rollout_len
  batch = n * t_len
  mb = batch // cfg.minibatches
  hidden = tuple(cfg.hidden)
  # LCRL (cfg.lcrl_graph): the policy mean is one sub-network per action component over its connected state
  # components (a constant mask, closed over); the value network stays globally connected.
  mask = policy_mask(cfg, env.observation_size, env.action_size, "ppo")
  pi_hidden = (tuple(cfg.lcrl_hidden) or hidden) if mask is not None else hidden
  optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.learning_rate, eps=1e-5))

  def policy_mean(policy, obs):
    return nets.policy_mean(policy, obs, mask)

  def init(key):
    k_pi, k_v, k_env, k_rng = jax.random.split(key, 4)
    params = {"policy": nets.init_policy(k_pi, env.observation_size, env.action_size, pi_hidden, cfg.init_log_std,
                                         mask=mask),
              "value": nets.init_mlp(k_v, (env.observation_size, *hidden, 1))}
    return TrainState(params=params, opt_state=optimizer.init(params), obs_stats=init_stats(env.observation_size),
                      env_state=rollout.reset(env, k_env, n), rng=k_rng, env_steps=jnp.zeros((), jnp.int32),
                      updates=jnp.zeros((), jnp.int32))

  def norm(stats, obs):
    return normalize(stats, obs) if cfg.normalize_obs else obs

  def act(params, stats, obs):
    return policy_mean(params["policy"], norm(stats, obs))

  def loss_fn(params, b):
    mean = policy_mean(params["policy"], b["obs"])
    log_std = params["policy"]["log_std"]
    logp = nets.gaussian_log_prob(mean, log_std, b["action"])
    ratio = jnp.exp(logp - b["logp"])
    adv = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
    pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv).mean()
    v = nets.mlp(params["value"], b["obs"])[..., 0]
    v_clip = b["value"] + jnp.clip(v - b["value"], -cfg.clip_eps, cfg.clip_eps)
    vf = 0.5 * jnp.maximum((v - b["ret"]) ** 2, (v_clip - b["ret"]) ** 2).mean()
    ent = nets.gaussian_entropy(log_std)
    total = pg + cfg.vf_coef * vf - cfg.ent_coef * ent
    return total, {"policy_loss": pg, "value_loss": vf, "entropy": ent,
                   "approx_kl": ((ratio - 1) - jnp.log(ratio)).mean()}

  def iteration(ts: TrainState):
    rng, k_roll, k_upd = jax.random.split(ts.rng, 3)
    params, stats = ts.params, ts.obs_stats

    def env_step(env_state, k):
      k_a, k_r = jax.random.split(k)
      obs_raw = env_state.obs
      obs = norm(stats, obs_raw)
      mean = policy_mean(params["policy"], obs)
      log_std = params["policy"]["log_std"]
      action = mean + jnp.exp(log_std) * jax.random.normal(k_a, mean.shape)
      logp = nets.gaussian_log_prob(mean, log_std, action)
      value = nets.mlp(params["value"], obs)[..., 0]
      env_state, tr = rollout.step(env, env_state, action, k_r)
      out = {"obs": obs, "obs_raw": obs_raw, "action": action, "logp": logp, "value": value,
             "reward": tr.reward * cfg.reward_scale, "done": tr.done, "raw_reward": tr.reward,
             "success": tr.metrics.get("success", jnp.zeros_like(tr.reward))}
      return env_state, out

    env_state, traj = jax.lax.scan(env_step, ts.env_state, jax.random.split(k_roll, t_len))
    last_v = nets.mlp(params["value"], norm(stats, env_state.obs))[..., 0]

    adv = gae_advantages(traj["reward"], traj["value"], traj["done"], last_v, cfg.gamma, cfg.gae_lambda)
    data = {"obs": traj["obs"], "action": traj["action"], "logp": traj["logp"], "value": traj["value"],
            "adv": adv, "ret": adv + traj["value"]}
    data = jax.tree.map(lambda x: x.reshape((batch,) + x.shape[2:]), data)

    def epoch(carry, k):
      p, o = carry
      perm = jax.random.permutation(k, batch)
      shuffled = jax.tree.map(lambda x: x[perm].reshape((cfg.minibatches, mb) + x.shape[1:]), data)

      def update(carry, b):
        p, o = carry
        (_, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, b)
        upd, o = optimizer.update(grads, o, p)
        return (optax.apply_updates(p, upd), o), info

      (p, o), info = jax.lax.scan(update, (p, o), shuffled)
      return (p, o), info

    (params, opt_state), info = jax.lax.scan(epoch, (params, ts.opt_state), jax.random.split(k_upd, cfg.epochs))
    new_stats = update_stats(stats, traj["obs_raw"]) if cfg.normalize_obs else stats
    dones = traj["done"].sum()
    metrics = {k: v.mean() for k, v in info.items()}
    metrics.update(reward=traj["raw_reward"].mean(), episodes=dones,
                   train_success_rate=traj["success"].sum() / jnp.maximum(dones, 1.0))
    ts = ts.replace(params=params, opt_state=opt_state, obs_stats=new_stats, env_state=env_state, rng=rng,
                    env_steps=ts.env_steps + batch, updates=ts.updates + cfg.epochs * cfg.minibatches)
    return ts, metrics

  return Algo(init=init, iteration=iteration, act=act, optimizer=optimizer, steps_per_iteration=batch)
