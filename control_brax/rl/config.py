"""RL run configs: sections `env`, `algo`, `ppo`, `ddpg`, `sac`, `train`, `pead`, `cs3` (declarations, validation).

`configs/assembly/{ppo_square,ppo_l_shape,ddpg_l_shape,sac_l_shape}.py` start from
`base_rl_config()` and change what differs. Every field is declared once below
with its default; `ALGO_DEFAULTS` holds the defaults that depend on the
algorithm. Step counts are environment steps (one policy step of one world).

Lists are lists: `ppo.hidden = (64, 64)`, `pead.switch_steps = (250_000,)`,
`pead.stages` a list of stages, each an `env.action_groups` value (a list of
groups of axis names), coarse to fine, e.g. the default
`((('x', 'y'), ('z',), ('rx', 'ry'), ('rz',)), ())`: x/y tied, tilts tied, z and yaw
alone, then one output per axis. Workdirs written before lists were lists hold
them as strings ('64,64', 'x,y;z;rx,ry;rz|'); `from_saved` reads those.
"""

from __future__ import annotations

import ml_collections

from confspec import ConfigError, Field, defaults, parse_list_flag, validate
from control_brax.config import ENV_SCHEMA, GROUPS, parse_axes, parse_groups, validate_env


def _widths(default, doc):
  return Field(tuple, default, item=int, lo=1, doc=doc)


_LCRL_GRAPH_DOC = ("LCRL: path to a CS3 connection_graph.json ('' = global MLP, 'full' = per-component "
                   "sub-networks seeing everything)")
_LCRL_HIDDEN_DOC = "LCRL: hidden widths of each action component's sub-network (() = `hidden`)"

PPO_SCHEMA = {
    "num_envs": Field(int, 128, lo=1), "rollout_len": Field(int, 32, lo=1), "epochs": Field(int, 4, lo=1),
    "minibatches": Field(int, 4, lo=1), "learning_rate": Field(float, 3e-4, lo=0, lo_open=True, hi=1),
    "gamma": Field(float, 0.99, lo=0, hi=1), "gae_lambda": Field(float, 0.95, lo=0, hi=1),
    "clip_eps": Field(float, 0.2, lo=0, lo_open=True, hi=1), "ent_coef": Field(float, 0.0, lo=0),
    "vf_coef": Field(float, 0.5, lo=0), "max_grad_norm": Field(float, 0.5, lo=0, lo_open=True),
    "hidden": _widths((64, 64), "hidden widths of the policy and value MLPs"),
    "init_log_std": Field(float, -0.5, lo=-5, hi=1), "normalize_obs": Field(bool, True),
    "reward_scale": Field(float, 0.1, lo=0, lo_open=True),
    "lcrl_graph": Field(str, "", doc=_LCRL_GRAPH_DOC),
    "lcrl_hidden": _widths((), _LCRL_HIDDEN_DOC),
}

# The fields every replay-based algorithm (control_brax.rl.replay: DDPG/TD3, SAC) declares alike.
REPLAY_SCHEMA = {
    "num_envs": Field(int, 32, lo=1),
    "steps_per_iteration": Field(int, 8, lo=1, doc="env steps per world per iteration"),
    "updates_per_iteration": Field(int, 32, lo=1), "batch_size": Field(int, 256, lo=1),
    "buffer_size": Field(int, 200_000, lo=1),
    "warmup_steps": Field(int, 5000, lo=0, doc="random-action env steps before learning"),
    "actor_lr": Field(float, 3e-4, lo=0, lo_open=True, hi=1), "critic_lr": Field(float, 3e-4, lo=0, lo_open=True, hi=1),
    "gamma": Field(float, 0.99, lo=0, hi=1), "tau": Field(float, 0.005, lo=0, lo_open=True, hi=1),
    "hidden": _widths((64, 64), "hidden widths of the actor and critic MLPs"),
    "normalize_obs": Field(bool, True), "reward_scale": Field(float, 0.1, lo=0, lo_open=True),
}

DDPG_SCHEMA = {
    **REPLAY_SCHEMA,
    "exploration_noise": Field(float, 0.2, lo=0),
    "td3": Field(bool, True, doc="twin critics, delayed actor updates, target policy smoothing"),
    "policy_delay": Field(int, 2, lo=1), "target_noise": Field(float, 0.2, lo=0),
    "target_noise_clip": Field(float, 0.5, lo=0),
    "lcrl_graph": Field(str, "", doc=_LCRL_GRAPH_DOC),
    "lcrl_hidden": _widths((), _LCRL_HIDDEN_DOC),
}

SAC_SCHEMA = {
    **REPLAY_SCHEMA,
    "alpha_lr": Field(float, 3e-4, lo=0, lo_open=True, hi=1, doc="temperature learning rate"),
    "init_alpha": Field(float, 0.1, lo=0, lo_open=True, doc="initial temperature"),
    "target_entropy_scale": Field(float, 1.0, lo=0, doc="target entropy = -this x action size"),
    "log_std_min": Field(float, -5.0, lo=-20, hi=0), "log_std_max": Field(float, 1.0, lo=-5, hi=5),
}

CS3_SCHEMA = {
    "samples": Field(int, 4096, lo=2, doc="Monte-Carlo samples (state, probe action, ordering)"),
    "batch": Field(int, 256, lo=2, doc="samples per batched simulator call (x (n_actions + 1) worlds)"),
    "pool": Field(int, 1024, lo=1, doc="states collected from rollouts; samples draw from them with replacement"),
    "pool_steps": Field(int, 60, lo=1,
                        doc="each pool state is taken at a uniform step in [0, pool_steps) of a rollout"),
    "rollout_action_scale": Field(float, 0.5, lo=0, hi=1, doc="rollouts use uniform actions in +- this"),
    "horizon": Field(int, 1, lo=1, hi=100, doc="control steps the coalition's action is held before measuring"),
    "z": Field(float, 3.0, lo=0, doc="edge needs phi > z x standard error"),
    "tau": Field(float, 0.1, lo=0, hi=1, doc="edge needs phi > tau x the largest phi on the same state component"),
    "seed": Field(int, 0, lo=0),
}

TRAIN_SCHEMA = {
    "total_env_steps": Field(int, 1_000_000, lo=1, doc="budget per seed (ALGO_DEFAULTS: 300_000 for ddpg)"),
    "eval_every_steps": Field(int, 50_000, lo=1),
    "eval_envs": Field(int, 256, lo=1, doc="evaluation episodes per evaluation"),
    "checkpoint_every_steps": Field(int, 100_000, lo=1), "keep_checkpoints": Field(int, 2, lo=1),
    "seed": Field(int, 0, lo=0), "num_seeds": Field(int, 1, lo=1, doc="independent seeds vmapped in one program"),
    "target_success": Field(float, 0.0, lo=0, hi=1,
                            doc="stop when every seed's eval success reaches this (0 = never)"),
    "max_wall_s": Field(float, 0.0, lo=0, doc="stop after this much training time (0 = no limit)"),
}

PEAD_SCHEMA = {
    "enabled": Field(bool, False),
    "stages": Field(tuple, ((("x", "y"), ("z",), ("rx", "ry"), ("rz",)), ()), item=GROUPS,
                    doc="env.action_groups of each stage, coarse to fine; the last is used for the rest"),
    "switch": Field(str, "steps", choices=("steps", "plateau")),
    "switch_steps": Field(tuple, (), item=int, lo=1, doc="env steps at which to move to the next stage"),
    "plateau_patience": Field(int, 3, lo=1, doc="evaluations without improvement before switching"),
    "plateau_min_delta": Field(float, 0.5, lo=0, doc="eval return improvement that counts"),
}

SCHEMA = {"env": ENV_SCHEMA, "algo": Field(str, "ppo", choices=("ppo", "ddpg", "sac")), "ppo": PPO_SCHEMA,
          "ddpg": DDPG_SCHEMA, "sac": SAC_SCHEMA, "train": TRAIN_SCHEMA, "pead": PEAD_SCHEMA, "cs3": CS3_SCHEMA}

# The defaults that depend on the algorithm (dotted paths into SCHEMA); the rest are the declared ones.
ALGO_DEFAULTS = {"ppo": {}, "ddpg": {"train.total_env_steps": 300_000}, "sac": {"train.total_env_steps": 300_000}}


def base_rl_config(algo: str = "ppo", overrides: dict | None = None) -> ml_collections.ConfigDict:
  """Every declared default, with `algo`, its ALGO_DEFAULTS and then `overrides` ({"a.b": value}, each checked
  like a declared default); ConfigError for an unknown algorithm or field. Config files under configs/assembly/
  are one call of this."""
  return defaults(SCHEMA, {"algo": algo, **ALGO_DEFAULTS.get(algo, {}), **(overrides or {})})


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
  path = section.lcrl_graph
  if not path:
    return None
  if path == "full":
    import numpy as np  # noqa: PLC0415

    return np.ones((action_size, obs_size), np.float32)
  return load_connection_mask(path, obs_size, action_size, f"{name}.lcrl_graph")


def pead_stages(c) -> list:
  """The `env.action_groups` of each stage (() = one output per axis); just the env's own without PEAD."""
  if not c.pead.enabled:
    return [c.env.action_groups]
  return list(c.pead.stages)


def _check(c) -> None:
  validate_env(c.env)
  section = c[c.algo]
  if section.get("lcrl_graph", ""):
    if c.pead.enabled:
      raise ConfigError(f"{c.algo}.lcrl_graph: LCRL with pead.enabled is not supported (the action size changes "
                        "between PEAD stages); disable one")
    policy_mask(section, *env_sizes(c.env), c.algo)
  if c.algo == "ppo" and (c.ppo.num_envs * c.ppo.rollout_len) % c.ppo.minibatches:
    raise ConfigError("ppo.minibatches: must divide ppo.num_envs x ppo.rollout_len")
  if not c.pead.enabled:
    return
  dims = parse_axes(c.env.action_dims, "env.action_dims")
  stages = pead_stages(c)
  if len(stages) < 2:
    raise ConfigError("pead.stages: needs at least two stages (a list of env.action_groups values)")
  prev = None
  for s in stages:
    groups = parse_groups(s, dims, "pead.stages")
    if prev is not None and not all(any(set(g) <= set(p) for p in prev) for g in groups):
      raise ConfigError(f"pead.stages: {s!r} must refine the previous stage (each group inside one earlier group)")
    prev = groups
  if c.pead.switch == "steps":
    at = list(c.pead.switch_steps)
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


def _old_groups(text: str):
  """'x,y;z;rx,ry;rz' -> (('x', 'y'), ('z',), ('rx', 'ry'), ('rz',)); '' -> ()."""
  return tuple(parse_list_flag(g) for g in text.split(";")) if text.strip() else ()


# Fields that workdirs saved as strings before lists were lists, and how to read each.
_OLD_STRING_FORMS = {
    ("env", "action_dims"): parse_list_flag, ("env", "action_groups"): _old_groups,
    ("ppo", "hidden"): parse_list_flag, ("ppo", "lcrl_hidden"): parse_list_flag,
    ("ddpg", "hidden"): parse_list_flag, ("ddpg", "lcrl_hidden"): parse_list_flag,
    ("pead", "stages"): lambda text: tuple(_old_groups(s) for s in text.split("|")),
    ("pead", "switch_steps"): parse_list_flag,  # '' -> (), '30000' -> (30000,), '64,64' -> (64, 64)
}


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """The validated config of a workdir's saved config.json (control_brax.train writes it).

  Workdirs written by older versions stay loadable: fields added since then take
  their defaults, and lists saved in their old string form ('64,64',
  'x,y;z;rx,ry;rz|') are read as the lists they meant; anything else wrong fails
  validation with its one line.
  """
  c = base_rl_config(saved.get("algo", "ppo"))
  for section, values in saved.items():
    if section in c and isinstance(values, dict):
      for key, value in values.items():
        read = _OLD_STRING_FORMS.get((section, key))
        try:
          c[section][key] = read(value) if read is not None and isinstance(value, str) else value
        except TypeError as e:  # ConfigDict keeps each field's type
          raise ConfigError(f"config.{section}.{key}: {value!r} in the saved config is not a "
                            f"{type(c[section][key]).__name__}") from e
    else:
      c[section] = values
  return validate_rl(c)
