"""PEAD: progressive extension of the action dimension (our definition, docs/control_brax.md).

Grouping rule: action axes that play the same role are tied to one policy
output (translational x/y together, tilts rx/ry together; z and yaw alone),
written as `env.action_groups`, e.g. (('x', 'y'), ('z',), ('rx', 'ry'), ('rz',)). A
run goes through `pead.stages`, each stage refining the previous one's groups, the
last usually () (one output per axis). At a switch (a step count, or a plateau of the
evaluation return) the networks grow so that the policy's output is unchanged:
each new output copies the weights, bias and log-std of the group it came from;
a critic's action inputs (DDPG) are split with weights divided by the group's
size, so Q is unchanged for tied actions. Adam's moments are carried the same
way, so the optimiser does not restart.
"""

from __future__ import annotations

import jax
import optax

from control_brax.config import parse_axes, parse_groups
from control_brax.rl import networks as nets


def group_index(action_dims, old, new) -> tuple[list[int], list[int]]:
  """(index, counts): new output j comes from old output index[j]; counts[i] = new outputs sharing old output i.

  `action_dims` is an `env.action_dims` value, `old` and `new` two `env.action_groups` values (PEAD stages)."""
  dims = parse_axes(action_dims, "env.action_dims")
  old_g = parse_groups(old, dims, "pead.stages")
  new_g = parse_groups(new, dims, "pead.stages")
  index = []
  for g in new_g:
    owners = [i for i, p in enumerate(old_g) if set(g) <= set(p)]
    if not owners:
      raise ValueError(f"stage {new!r} does not refine {old!r}")
    index.append(owners[0])
  counts = [index.count(i) for i in range(len(old_g))]
  return index, counts


def _map_adam(opt_state, fn):
  def f(s):
    return s._replace(mu=fn(s.mu), nu=fn(s.nu)) if isinstance(s, optax.ScaleByAdamState) else s

  return jax.tree.map(f, opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))


def extend_policy(policy, index):
  """Gaussian policy {"mean", "log_std"} with outputs re-indexed."""
  return {"mean": nets.extend_outputs(policy["mean"], index), "log_std": policy["log_std"][..., index]}


def extend_ppo(params, opt_state, index):
  """PPO params and Adam state after an extension (the value network is unchanged)."""

  def fn(p):
    return {"policy": extend_policy(p["policy"], index), "value": p["value"]}

  return fn(params), _map_adam(opt_state, fn)


def extend_ddpg(params, opt_states, index, counts, obs_size: int):
  """DDPG/TD3 params {"actor", "critics", "target_actor", "target_critics"} and both optimisers' states."""

  def actor(layers):
    return nets.extend_outputs(layers, index)

  def critics(cs):
    return [nets.extend_inputs(c, obs_size, index, counts) for c in cs]

  new = {"actor": actor(params["actor"]), "critics": critics(params["critics"]),
         "target_actor": actor(params["target_actor"]), "target_critics": critics(params["target_critics"])}
  actor_opt, critic_opt = opt_states
  return new, (_map_adam(actor_opt, actor), _map_adam(critic_opt, critics))


def extend_sac(params, opt_states, index, counts, obs_size: int):
  """SAC params {"actor", "critics", "target_critics", "log_alpha"} and its three optimisers' states: the
  actor's outputs are means then log-stds, so both halves take the group's rows; the temperature is kept."""
  n_old = len(counts)
  actor_index = list(index) + [n_old + i for i in index]

  def actor(layers):
    return nets.extend_outputs(layers, actor_index)

  def critics(cs):
    return [nets.extend_inputs(c, obs_size, index, counts) for c in cs]

  new = {"actor": actor(params["actor"]), "critics": critics(params["critics"]),
         "target_critics": critics(params["target_critics"]), "log_alpha": params["log_alpha"]}
  actor_opt, critic_opt, alpha_opt = opt_states
  return new, (_map_adam(actor_opt, actor), _map_adam(critic_opt, critics), alpha_opt)
