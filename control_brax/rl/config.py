"""RL run configs: sections `env`, `algo`, `ppo`, `ddpg`, `train`, `pead` (schemas, defaults, validation).

`configs/assembly/{ppo_square,ppo_l_shape,ddpg_l_shape}.py` start from
`base_rl_config()` and change what differs. Step counts are environment steps
(one policy step of one world).
"""

from __future__ import annotations

import ml_collections

from confspec import ConfigError, Field, validate
from control_brax.config import ENV_SCHEMA, base_env_config, parse_axes, parse_groups, validate_env

_POS = dict(lo=1)

PPO_SCHEMA = {
    "num_envs": Field(int, **_POS), "rollout_len": Field(int, **_POS), "epochs": Field(int, **_POS),
    "minibatches": Field(int, **_POS), "learning_rate": Field(float, lo=0, lo_open=True, hi=1),
    "gamma": Field(float, lo=0, hi=1), "gae_lambda": Field(float, lo=0, hi=1),
    "clip_eps": Field(float, lo=0, lo_open=True, hi=1), "ent_coef": Field(float, lo=0),
    "vf_coef": Field(float, lo=0), "max_grad_norm": Field(float, lo=0, lo_open=True),
    "hidden": Field(str, doc="comma-separated hidden widths, e.g. '64,64'"),
    "init_log_std": Field(float, lo=-5, hi=1), "normalize_obs": Field(bool),
    "reward_scale": Field(float, lo=0, lo_open=True),
    "lcrl_graph": Field(str, doc="LCRL: path to a CS3 connection_graph.json ('' = global MLP, 'full' = "
                                 "per-component sub-networks seeing everything)"),
    "lcrl_hidden": Field(str, doc="LCRL: hidden widths of each action component's sub-network ('' = `hidden`)"),
}

DDPG_SCHEMA = {
    "num_envs": Field(int, **_POS), "steps_per_iteration": Field(int, **_POS, doc="env steps per world per iteration"),
    "updates_per_iteration": Field(int, **_POS), "batch_size": Field(int, **_POS),
    "buffer_size": Field(int, **_POS), "warmup_steps": Field(int, lo=0, doc="random-action env steps before learning"),
    "actor_lr": Field(float, lo=0, lo_open=True, hi=1), "critic_lr": Field(float, lo=0, lo_open=True, hi=1),
    "gamma": Field(float, lo=0, hi=1), "tau": Field(float, lo=0, lo_open=True, hi=1),
    "exploration_noise": Field(float, lo=0), "hidden": Field(str),
    "td3": Field(bool, doc="twin critics, delayed actor updates, target policy smoothing"),
    "policy_delay": Field(int, **_POS), "target_noise": Field(float, lo=0), "target_noise_clip": Field(float, lo=0),
    "normalize_obs": Field(bool), "reward_scale": Field(float, lo=0, lo_open=True),
    "lcrl_graph": Field(str, doc="LCRL: a CS3 connection_graph.json for the actor ('' = global, 'full' = all ones)"),
    "lcrl_hidden": Field(str, doc="LCRL: hidden widths of each action component's sub-network ('' = `hidden`)"),
}

CS3_SCHEMA = {
    "samples": Field(int, lo=2, doc="Monte-Carlo samples (state, probe action, ordering)"),
    "batch": Field(int, lo=2, doc="samples per batched simulator call (x (n_actions + 1) worlds)"),
    "pool": Field(int, lo=1, doc="states collected from rollouts; samples draw from them with replacement"),
    "pool_steps": Field(int, lo=1, doc="each pool state is taken at a uniform step in [0, pool_steps) of a rollout"),
    "rollout_action_scale": Field(float, lo=0, hi=1, doc="rollouts use uniform actions in +- this"),
    "horizon": Field(int, lo=1, hi=100, doc="control steps the coalition's action is held before measuring"),
    "z": Field(float, lo=0, doc="edge needs phi > z x standard error"),
    "tau": Field(float, lo=0, hi=1, doc="edge needs phi > tau x the largest phi on the same state component"),
    "seed": Field(int, lo=0),
}

TRAIN_SCHEMA = {
    "total_env_steps": Field(int, **_POS, doc="budget per seed"),
    "eval_every_steps": Field(int, **_POS), "eval_envs": Field(int, **_POS, doc="evaluation episodes per evaluation"),
    "checkpoint_every_steps": Field(int, **_POS), "keep_checkpoints": Field(int, **_POS),
    "seed": Field(int, lo=0), "num_seeds": Field(int, **_POS, doc="independent seeds vmapped in one program"),
    "target_success": Field(float, lo=0, hi=1, doc="stop when every seed's eval success reaches this (0 = never)"),
    "max_wall_s": Field(float, lo=0, doc="stop after this much training time (0 = no limit)"),
}

PEAD_SCHEMA = {
    "enabled": Field(bool),
    "stages": Field(str, doc="'|'-separated action groupings, coarse to fine; the last is used for the rest"),
    "switch": Field(str, choices=("steps", "plateau")),
    "switch_steps": Field(str, doc="comma-separated env steps at which to move to the next stage"),
    "plateau_patience": Field(int, **_POS, doc="evaluations without improvement before switching"),
    "plateau_min_delta": Field(float, lo=0, doc="eval return improvement that counts"),
}

SCHEMA = {"env": ENV_SCHEMA, "algo": Field(str, choices=("ppo", "ddpg")), "ppo": PPO_SCHEMA, "ddpg": DDPG_SCHEMA,
          "train": TRAIN_SCHEMA, "pead": PEAD_SCHEMA, "cs3": CS3_SCHEMA}


def base_rl_config(algo: str = "ppo") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.env = base_env_config()
  c.algo = algo
  c.ppo = ml_collections.ConfigDict(dict(
      num_envs=128, rollout_len=32, epochs=4, minibatches=4, learning_rate=3e-4, gamma=0.99, gae_lambda=0.95,
      clip_eps=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, hidden="64,64", init_log_std=-0.5,
      normalize_obs=True, reward_scale=0.1, lcrl_graph="", lcrl_hidden=""))
  c.ddpg = ml_collections.ConfigDict(dict(
      num_envs=32, steps_per_iteration=8, updates_per_iteration=32, batch_size=256, buffer_size=200_000,
      warmup_steps=5000, actor_lr=3e-4, critic_lr=3e-4, gamma=0.99, tau=0.005, exploration_noise=0.2,
      hidden="64,64", td3=True, policy_delay=2, target_noise=0.2, target_noise_clip=0.5, normalize_obs=True,
      reward_scale=0.1, lcrl_graph="", lcrl_hidden=""))
  c.train = ml_collections.ConfigDict(dict(
      total_env_steps=1_000_000 if algo == "ppo" else 300_000, eval_every_steps=50_000, eval_envs=256,
      checkpoint_every_steps=100_000, keep_checkpoints=2, seed=0, num_seeds=1, target_success=0.0, max_wall_s=0.0))
  c.pead = ml_collections.ConfigDict(dict(
      enabled=False, stages="x,y;z;rx,ry;rz|", switch="steps", switch_steps="", plateau_patience=3,
      plateau_min_delta=0.5))
  c.cs3 = ml_collections.ConfigDict(dict(
      samples=4096, batch=256, pool=1024, pool_steps=60, rollout_action_scale=0.5, horizon=1, z=3.0, tau=0.1,
      seed=0))
  return c


def env_sizes(env) -> tuple[int, int]:
  """(observation size, action size) of an `env` section without building the env (as task.make_spec counts)."""
  dims = parse_axes(env.action_dims, "env.action_dims")
  n_act = len(parse_groups(env.action_groups, dims, "env.action_groups")) + (len(dims) if env.gain_action else 0)
  return (18 if env.obs_velocities else 12), n_act


def load_connection_mask(path: str, obs_size: int, action_size: int, field: str):
  """The 0/1 `graph` of a CS3 connection_graph.json as an (action_size, obs_size) numpy array, checked.

  Raises ConfigError naming `field` when the file is missing or unreadable, or
  its shape does not match the env's action x observation sizes.
  """
  import json  # noqa: PLC0415
  import os  # noqa: PLC0415

  import numpy as np  # noqa: PLC0415

  if not os.path.exists(path):
    raise ConfigError(f"{field}: {path!r} does not exist (run `python -m experiments.cs3 --config=... --out=DIR` "
                      "and pass DIR/connection_graph.json)")
  try:
    with open(path) as f:
      graph = np.asarray(json.load(f)["graph"], dtype=float)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{field}: {path!r} is not a connection_graph.json with a 'graph' matrix ({e})") from e
  if graph.shape != (action_size, obs_size):
    raise ConfigError(f"{field}: graph in {path!r} has shape {graph.shape}; this env needs (action components, "
                      f"state components) = ({action_size}, {obs_size})")
  if not np.isin(graph, (0.0, 1.0)).all():
    raise ConfigError(f"{field}: graph in {path!r} must hold only 0 and 1")
  return graph.astype(np.float32)


def policy_mask(section, obs_size: int, action_size: int, name: str):
  """LCRL connection mask of an algorithm section: None (global), ones ('full'), or the graph file's matrix.

  `lcrl_graph` = 'full' gives per-component sub-networks that see every state
  component: the same architecture as LCRL with the locality removed.
  """
  path = section.get("lcrl_graph", "")
  if not path:
    return None
  if path == "full":
    import numpy as np  # noqa: PLC0415

    return np.ones((action_size, obs_size), np.float32)
  return load_connection_mask(path, obs_size, action_size, f"{name}.lcrl_graph")


def pead_stages(c) -> list[str]:
  """The `env.action_groups` of each stage ('' = one output per axis); just the env's own without PEAD."""
  if not c.pead.enabled:
    return [c.env.action_groups]
  return [s.strip() for s in c.pead.stages.split("|")]


def _check(c) -> None:
  validate_env(c.env)
  section = c[c.algo]
  if section.lcrl_graph:
    if c.pead.enabled:
      raise ConfigError(f"{c.algo}.lcrl_graph: LCRL with pead.enabled is not supported (the action size changes "
                        "between PEAD stages); disable one")
    policy_mask(section, *env_sizes(c.env), c.algo)
  try:
    hidden = [int(x) for x in str(section.lcrl_hidden).split(",") if x.strip()]
  except ValueError as e:
    raise ConfigError(f"{c.algo}.lcrl_hidden: {section.lcrl_hidden!r} must be comma-separated integers") from e
  if any(h < 1 for h in hidden):
    raise ConfigError(f"{c.algo}.lcrl_hidden: widths must be >= 1")
  if c.algo == "ppo" and (c.ppo.num_envs * c.ppo.rollout_len) % c.ppo.minibatches:
    raise ConfigError("ppo.minibatches: must divide ppo.num_envs x ppo.rollout_len")
  if not c.pead.enabled:
    return
  dims = parse_axes(c.env.action_dims, "env.action_dims")
  stages = pead_stages(c)
  if len(stages) < 2:
    raise ConfigError("pead.stages: needs at least two stages separated by '|'")
  prev = None
  for s in stages:
    groups = parse_groups(s, dims, "pead.stages")
    if prev is not None and not all(any(set(g) <= set(p) for p in prev) for g in groups):
      raise ConfigError(f"pead.stages: {s!r} must refine the previous stage (each group inside one earlier group)")
    prev = groups
  if c.pead.switch == "steps":
    try:
      at = [int(x) for x in c.pead.switch_steps.split(",") if x.strip()]
    except ValueError as e:
      raise ConfigError(f"pead.switch_steps: {c.pead.switch_steps!r} must be comma-separated integers") from e
    if len(at) != len(stages) - 1 or at != sorted(at):
      raise ConfigError(f"pead.switch_steps: needs {len(stages) - 1} increasing env-step counts, one per switch")


def validate_rl(c) -> ml_collections.ConfigDict:
  validate(c, SCHEMA)
  _check(c)
  return c


def load_rl_config(path: str) -> ml_collections.ConfigDict:
  """A validated RL config from a config file (what `--config=` loads, for scripts without absl flags)."""
  from runkit.configfile import load_config_file  # noqa: PLC0415

  return validate_rl(load_config_file(path))
