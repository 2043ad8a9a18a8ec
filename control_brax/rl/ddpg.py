"""DDPG with TD3's improvements as options, functional: collection + replay updates in one jitted iteration.

    algo = make(env, cfg.ddpg); ts = algo.init(key); ts, metrics = algo.iteration(ts)

Collection and replay are `control_brax.rl.replay`'s (shared with SAC): warm-up with
uniform random actions, then the actor plus Gaussian exploration noise. TD3
options (`td3=True`): twin critics with the minimum target, actor and target
updates every `policy_delay` critic updates, target policy smoothing noise.
Observations are normalised at update time with the current running stats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from control_brax.rl import networks as nets
from control_brax.rl import rollout
from control_brax.rl.config import policy_mask
from control_brax.rl.normalize import init_stats, normalize
from control_brax.rl.ppo import Algo
from control_brax.rl.replay import Buffer, TrainState, extend_buffer, init_buffer, make_iteration, sample, soft_update

__all__ = ["Buffer", "TrainState", "extend_buffer", "make"]


def make(env, cfg) -> Algo:
  n = cfg.num_envs
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
    buf = init_buffer(cfg.buffer_size, obs_size, act_size)
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
    b = sample(buf, k_idx, cfg.batch_size)
    (c_loss, q_mean), g = jax.value_and_grad(critic_loss, has_aux=True)(params["critics"], params, stats, b, k_noise)
    upd, c_opt = critic_opt.update(g, c_opt, params["critics"])
    params = dict(params, critics=optax.apply_updates(params["critics"], upd))
    delay = cfg.policy_delay if cfg.td3 else 1

    def actor_step(operand):
      params, a_opt = operand
      g = jax.grad(actor_loss)(params["actor"], params, stats, b)
      upd, a_opt = actor_opt.update(g, a_opt, params["actor"])
      new_actor = optax.apply_updates(params["actor"], upd)
      params = dict(params, actor=new_actor, target_actor=soft_update(params["target_actor"], new_actor, cfg.tau),
                    target_critics=soft_update(params["target_critics"], params["critics"], cfg.tau))
      return params, a_opt

    params, a_opt = jax.lax.cond(i % delay == 0, actor_step, lambda o: o, (params, a_opt))
    return (params, (a_opt, c_opt), stats, buf), {"critic_loss": c_loss, "q_mean": q_mean}

  def explore(params, stats, obs, key):
    a_pi = act(params, stats, obs)
    return jnp.clip(a_pi + cfg.exploration_noise * jax.random.normal(key, a_pi.shape), -1, 1)

  iteration = make_iteration(env, cfg, explore, update)

  return Algo(init=init, iteration=iteration, act=act, optimizer=(actor_opt, critic_opt),
              steps_per_iteration=n * cfg.steps_per_iteration)
