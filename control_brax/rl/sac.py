"""SAC (soft actor-critic, automatic temperature), functional: collection + replay updates in one jitted iteration.

    algo = make(env, cfg.sac); ts = algo.init(key); ts, metrics = algo.iteration(ts)

Collection and replay are `control_brax.rl.replay`'s (shared with DDPG/TD3); the
train state's params are {"actor", "critics", "target_critics", "log_alpha"} and
its optimiser states (actor, critics, temperature).

Our definitions:
* Actor: an MLP from normalised observations to the mean and log-std of each
  action output (log-std squashed into [log_std_min, log_std_max] by tanh); the
  action is tanh(mean + std * noise), so it is in (-1, 1), and its log-density
  carries tanh's change of variables (log(1 - tanh(u)^2), written stably).
  Evaluation acts with tanh(mean).
* Twin critics Q(s, a) with Polyak-averaged targets; the target is
  r * reward_scale + gamma * (1 - done) * (min Q_target(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s').
* Temperature: alpha = exp(log_alpha) learnt so that the policy's entropy
  tracks target_entropy = -target_entropy_scale * action size.
* One actor and temperature update per critic update (no delay), in the same
  minibatch, after the critic step.
* PEAD: a new output copies its group's mean and log-std rows (`pead.extend_sac`);
  the critics' action inputs are split as for DDPG, so Q is unchanged for tied actions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from control_brax.rl import networks as nets
from control_brax.rl import rollout
from control_brax.rl.normalize import init_stats, normalize
from control_brax.rl.ppo import Algo
from control_brax.rl.replay import TrainState, init_buffer, make_iteration, sample, soft_update

__all__ = ["TrainState", "make", "squashed_gaussian"]


def squashed_gaussian(out, key, log_std_min: float, log_std_max: float):
  """(action, log-density) of tanh(N(mean, std)) from actor outputs `out` (..., 2 * act): means then log-stds."""
  mean, raw = jnp.split(out, 2, axis=-1)
  log_std = log_std_min + 0.5 * (log_std_max - log_std_min) * (jnp.tanh(raw) + 1.0)
  u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
  # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
  log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
  logp = nets.gaussian_log_prob(mean, log_std, u) - log_det.sum(-1)
  return jnp.tanh(u), logp


def make(env, cfg) -> Algo:
  n = cfg.num_envs
  hidden = tuple(cfg.hidden)
  obs_size, act_size = env.observation_size, env.action_size
  target_entropy = -cfg.target_entropy_scale * act_size
  actor_opt, critic_opt, alpha_opt = optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr), optax.adam(cfg.alpha_lr)

  def norm(stats, obs):
    return normalize(stats, obs) if cfg.normalize_obs else obs

  def actor_out(layers, obs):
    return nets.mlp(layers, obs, activation=jax.nn.relu)

  def policy(layers, obs, key):
    return squashed_gaussian(actor_out(layers, obs), key, cfg.log_std_min, cfg.log_std_max)

  def critic(layers, obs, a):
    return nets.mlp(layers, jnp.concatenate([obs, a], -1), activation=jax.nn.relu)[..., 0]

  def init(key):
    k_a, k_c, k_env, k_rng = jax.random.split(key, 4)
    a = nets.init_mlp(k_a, (obs_size, *hidden, 2 * act_size), last_scale=0.1)
    cs = [nets.init_mlp(k, (obs_size + act_size, *hidden, 1)) for k in jax.random.split(k_c, 2)]
    log_alpha = jnp.asarray(jnp.log(cfg.init_alpha), jnp.float32)
    params = {"actor": a, "critics": cs, "target_critics": cs, "log_alpha": log_alpha}
    opt = (actor_opt.init(a), critic_opt.init(cs), alpha_opt.init(log_alpha))
    return TrainState(params=params, opt_state=opt, obs_stats=init_stats(obs_size),
                      env_state=rollout.reset(env, k_env, n), buffer=init_buffer(cfg.buffer_size, obs_size, act_size),
                      rng=k_rng, env_steps=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32))

  def act(params, stats, obs):
    mean, _ = jnp.split(actor_out(params["actor"], norm(stats, obs)), 2, axis=-1)
    return jnp.tanh(mean)

  def explore(params, stats, obs, key):
    return policy(params["actor"], norm(stats, obs), key)[0]

  def critic_loss(cs, params, stats, b, key):
    obs, nxt = norm(stats, b["obs"]), norm(stats, b["next_obs"])
    a_next, logp_next = policy(params["actor"], nxt, key)
    q_next = jnp.min(jnp.stack([critic(c, nxt, a_next) for c in params["target_critics"]]), axis=0)
    alpha = jnp.exp(params["log_alpha"])
    target = jax.lax.stop_gradient(b["reward"] * cfg.reward_scale
                                   + cfg.gamma * (1 - b["done"]) * (q_next - alpha * logp_next))
    qs = [critic(c, obs, b["action"]) for c in cs]
    return sum(((q - target) ** 2).mean() for q in qs), qs[0].mean()

  def actor_loss(a_layers, params, stats, b, key):
    obs = norm(stats, b["obs"])
    a, logp = policy(a_layers, obs, key)
    q = jnp.min(jnp.stack([critic(c, obs, a) for c in params["critics"]]), axis=0)
    return (jnp.exp(params["log_alpha"]) * logp - q).mean(), logp.mean()

  def update(carry, x):
    params, (a_opt, c_opt, t_opt), stats, buf = carry
    _, key = x
    k_idx, k_next, k_pi = jax.random.split(key, 3)
    b = sample(buf, k_idx, cfg.batch_size)
    (c_loss, q_mean), g = jax.value_and_grad(critic_loss, has_aux=True)(params["critics"], params, stats, b, k_next)
    upd, c_opt = critic_opt.update(g, c_opt, params["critics"])
    params = dict(params, critics=optax.apply_updates(params["critics"], upd))
    (a_loss, logp), g = jax.value_and_grad(actor_loss, has_aux=True)(params["actor"], params, stats, b, k_pi)
    upd, a_opt = actor_opt.update(g, a_opt, params["actor"])
    params = dict(params, actor=optax.apply_updates(params["actor"], upd))
    # temperature: d/d log_alpha of -log_alpha * (logp + target_entropy), logp held fixed
    g_alpha = -(jax.lax.stop_gradient(logp) + target_entropy)
    upd, t_opt = alpha_opt.update(g_alpha, t_opt, params["log_alpha"])
    params = dict(params, log_alpha=optax.apply_updates(params["log_alpha"], upd),
                  target_critics=soft_update(params["target_critics"], params["critics"], cfg.tau))
    return (params, (a_opt, c_opt, t_opt), stats, buf), {
        "critic_loss": c_loss, "q_mean": q_mean, "actor_loss": a_loss, "entropy": -logp,
        "alpha": jnp.exp(params["log_alpha"])}

  iteration = make_iteration(env, cfg, explore, update)
  return Algo(init=init, iteration=iteration, act=act, optimizer=(actor_opt, critic_opt, alpha_opt),
              steps_per_iteration=n * cfg.steps_per_iteration)
