"""Batched env stepping with fresh-randomisation auto-reset, and deterministic evaluation episodes.

Brax's AutoResetWrapper restores each world's *first* state forever; for
training on a distribution of initial errors we reset finished worlds from a
fresh key instead (every world gets a new episode from the distribution).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _where(done, a, b):
  return jax.tree.map(lambda x, y: jnp.where(done.reshape(done.shape + (1,) * (x.ndim - done.ndim)), x, y), a, b)


def reset(env, key, n: int):
  return jax.vmap(env.reset)(jax.random.split(key, n))


def step(env, state, action, key):
  """One step of every world; finished worlds restart from fresh episodes.

  Returns (state to continue from, the transition's stepped state), so the
  caller reads reward/done/metrics of the transition from the second.
  """
  nxt = jax.vmap(env.step)(state, action)
  fresh = reset(env, key, action.shape[0])
  return _where(nxt.done > 0, fresh, nxt), nxt


def evaluate(env, act_fn, key, n: int) -> dict:
  """n episodes (one per world) with `act_fn(obs) -> action`; per-episode figures averaged.

  Returns success_rate, return, peak_force_n (mean of per-episode peaks),
  insertion_time_s (mean over successes; nan if none), episodes.
  """
  state = reset(env, key, n)
  steps = env.spec.episode_steps

  def body(carry, _):
    s, alive, ret, success, peak, t_success, t = carry
    nxt = jax.vmap(env.step)(s, act_fn(s.obs))
    ret = ret + alive * nxt.reward
    newly = alive * nxt.metrics["success"]
    success = jnp.maximum(success, newly)
    t_success = jnp.where(newly > 0, (t + 1) * env.dt, t_success)
    peak = jnp.maximum(peak, alive * nxt.metrics["force"])
    alive = alive * (1.0 - nxt.done)
    return (nxt, alive, ret, success, peak, t_success, t + 1), None

  z = jnp.zeros(n)
  carry = (state, jnp.ones(n), z, z, z, z, 0)
  _, alive, ret, success, peak, t_success, _ = jax.lax.scan(body, carry, None, length=steps)[0]
  n_success = success.sum()
  return {"success_rate": success.mean(), "return": ret.mean(), "peak_force_n": peak.mean(),
          "insertion_time_s": jnp.where(n_success > 0, (t_success * success).sum() / jnp.maximum(n_success, 1),
                                        jnp.nan),
          "episodes": jnp.asarray(n)}
