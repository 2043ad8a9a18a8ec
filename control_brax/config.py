"""The assembly environment's config: schema, defaults, validation, peg-file loading.

An RL config (`configs/assembly/*.py`) has an `env` section built from
`base_env_config()`; the geometry comes from a peg file named by `env.peg`
(`configs/assembly/pegs/<name>.py`, or a path to any file returning `base_peg()`).
Units: metres, radians, newtons, seconds; per-axis tuples are ordered
(x, y, z, rx, ry, rz).
"""

from __future__ import annotations

import os

import ml_collections

from confspec import ConfigError, Field, validate
from control_brax.geometry import validate_peg
from runkit.configfile import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEG_DIR = os.path.join(REPO, "configs", "assembly", "pegs")
POSE_AXES = ("x", "y", "z", "rx", "ry", "rz")

ENV_SCHEMA = {
    "peg": Field(str, doc="peg file name under configs/assembly/pegs (e.g. l_shape) or a path"),
    "control_dt": Field(float, lo=0.001, hi=0.1, doc="policy and admittance period (s)"),
    "substeps": Field(int, lo=1, hi=100, doc="physics steps per control step (timestep = control_dt / substeps)"),
    "solver_iterations": Field(int, lo=1, hi=100),
    "ls_iterations": Field(int, lo=1, hi=100),
    "solref_timeconst": Field(float, lo=0.0002, hi=0.05, doc="contact stiffness time constant (s), >= 2 timesteps"),
    "solimp_width": Field(float, lo=0.00001, hi=0.01, doc="penetration (m) over which contact impedance rises "
                                                         "from 0.95 to 0.99"),
    "prune_margin": Field(float, lo=0, hi=0.1, doc="drop contact pairs farther apart than this (m); 0 keeps all"),
    "kp_trans": Field(float, lo=1, doc="holder servo stiffness (N/m): the robot's position loop"),
    "kv_trans": Field(float, lo=0),
    "kp_rot": Field(float, lo=0.01, doc="holder servo stiffness (N m/rad)"),
    "kv_rot": Field(float, lo=0),
    "episode_steps": Field(int, lo=2, hi=10000),
    "start_height": Field(float, lo=0, hi=0.05, doc="tip height above the hole's mouth at reset (m)"),
    "insert_speed": Field(float, lo=0.001, hi=0.5, doc="reference descent speed (m/s)"),
    "insert_overshoot": Field(float, lo=0, hi=0.05, doc="reference ends this far below the hole floor (m)"),
    "compliance": Field(bool, doc="admittance loop on (RL + compliance) or off (RL alone)"),
    "adm_m": Field(tuple, doc="admittance mass per axis (kg, kg m^2)"),
    "adm_d": Field(tuple, doc="admittance damping per axis"),
    "adm_k": Field(tuple, doc="admittance stiffness per axis (N/m, N m/rad)"),
    "desired_force": Field(tuple, doc="desired contact wrench on the peg (N, N m); +z = pressing down"),
    "adm_max_offset": Field(float, lo=0, hi=0.05, doc="clip of the admittance translation offset (m)"),
    "adm_max_angle": Field(float, lo=0, hi=0.5, doc="clip of the admittance rotation offset (rad)"),
    "action_dims": Field(str, doc="comma-separated pose axes the action drives, from x,y,z,rx,ry,rz"),
    "action_groups": Field(str, doc="PEAD grouping: ';'-separated groups of action axes tied to one output; "
                                    "empty = one output per axis"),
    "action_scale_m": Field(float, lo=0, hi=0.01, doc="pose increment per unit action, translation (m)"),
    "action_scale_rad": Field(float, lo=0, hi=0.1, doc="pose increment per unit action, rotation (rad)"),
    "action_max_offset_m": Field(float, lo=0, hi=0.05, doc="clip of the accumulated RL offset (m)"),
    "action_max_angle": Field(float, lo=0, hi=0.5, doc="clip of the accumulated RL offset (rad)"),
    "gain_action": Field(bool, doc="extra action components scale K per driven axis by exp(range * a)"),
    "gain_log_range": Field(float, lo=0, hi=5),
    "obs_velocities": Field(bool, doc="append the tip's 6 velocities to the observation"),
    "obs_force_noise": Field(float, lo=0, doc="std of additive F/T noise (N; N m scaled by 0.05)"),
    "obs_pose_noise": Field(float, lo=0, doc="std of additive pose noise (m; rad scaled by 10)"),
    "success_fraction": Field(float, lo=0.1, hi=1.0, doc="success when tip depth >= this fraction of hole depth"),
    "force_limit": Field(float, lo=1, doc="terminate when the contact force exceeds this (N)"),
    "workspace_m": Field(float, lo=0.001, hi=0.1, doc="terminate when the tip leaves this lateral radius (m)"),
    "reward_progress": Field(float, lo=0),
    "reward_align": Field(float, lo=0),
    "reward_force": Field(float, lo=0),
    "force_threshold": Field(float, lo=0, doc="contact force above which the force penalty applies (N)"),
    "success_bonus": Field(float, lo=0),
    "error_scale": Field(float, lo=0, hi=3, doc="multiplies the peg file's initial-error distribution (0 = aligned)"),
    "randomize_physics": Field(bool, doc="sample friction and clearance from the peg file's ranges"),
}


def base_env_config() -> ml_collections.ConfigDict:
  """Defaults: 100 Hz control over 1 kHz physics, a stiff holder and a soft admittance loop."""
  c = ml_collections.ConfigDict()
  c.peg = "square"
  c.control_dt = 0.01
  c.substeps = 10
  c.solver_iterations = 8
  c.ls_iterations = 8
  c.solref_timeconst = 0.002
  c.solimp_width = 0.001
  c.prune_margin = 0.012
  c.kp_trans = 20000.0
  c.kv_trans = 200.0
  c.kp_rot = 50.0
  c.kv_rot = 1.0
  c.episode_steps = 120
  c.start_height = 0.002
  c.insert_speed = 0.03
  c.insert_overshoot = 0.003
  c.compliance = True
  c.adm_m = (1.0, 1.0, 1.0, 0.01, 0.01, 0.01)
  c.adm_d = (60.0, 60.0, 60.0, 0.6, 0.6, 0.6)
  c.adm_k = (400.0, 400.0, 400.0, 4.0, 4.0, 4.0)
  c.desired_force = (0.0, 0.0, 5.0, 0.0, 0.0, 0.0)
  c.adm_max_offset = 0.008
  c.adm_max_angle = 0.15
  c.action_dims = "x,y,z,rx,ry,rz"
  c.action_groups = ""
  c.action_scale_m = 0.0005
  c.action_scale_rad = 0.005
  c.action_max_offset_m = 0.006
  c.action_max_angle = 0.1
  c.gain_action = False
  c.gain_log_range = 1.0
  c.obs_velocities = False
  c.obs_force_noise = 0.0
  c.obs_pose_noise = 0.0
  c.success_fraction = 0.8
  c.force_limit = 150.0
  c.workspace_m = 0.012
  c.reward_progress = 10.0
  c.reward_align = 0.1
  c.reward_force = 0.05
  c.force_threshold = 30.0
  c.success_bonus = 10.0
  c.error_scale = 1.0
  c.randomize_physics = True
  return c


def parse_axes(spec: str, field: str) -> tuple[int, ...]:
  """'x,y,rz' -> (0, 1, 5); raises ConfigError naming `field` on an unknown axis or a repeat."""
  names = [s.strip() for s in spec.split(",") if s.strip()]
  bad = [n for n in names if n not in POSE_AXES]
  if bad or not names or len(set(names)) != len(names):
    raise ConfigError(f"{field}: {spec!r} must be distinct axes from {', '.join(POSE_AXES)}")
  return tuple(POSE_AXES.index(n) for n in names)


def parse_groups(spec: str, dims: tuple[int, ...], field: str) -> tuple[tuple[int, ...], ...]:
  """PEAD groups 'x,y;z;rx,ry;rz' -> index tuples into `dims`; empty = one group per driven axis."""
  if not spec.strip():
    return tuple((i,) for i in range(len(dims)))
  groups = []
  for part in spec.split(";"):
    axes = parse_axes(part, field)
    missing = [POSE_AXES[a] for a in axes if a not in dims]
    if missing:
      raise ConfigError(f"{field}: axes {missing} are not in env.action_dims")
    groups.append(tuple(dims.index(a) for a in axes))
  flat = sorted(i for g in groups for i in g)
  if flat != list(range(len(dims))):
    raise ConfigError(f"{field}: {spec!r} must cover every axis of env.action_dims exactly once")
  return tuple(groups)


def _check_tuples(c) -> None:
  for name in ("adm_m", "adm_d", "adm_k", "desired_force"):
    v = getattr(c, name)
    if len(v) != 6 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
      raise ConfigError(f"env.{name}: {v!r} must be 6 numbers (x, y, z, rx, ry, rz)")
    if name in ("adm_m", "adm_k") and min(v) <= 0:
      raise ConfigError(f"env.{name}: {v!r} must be > 0 per axis")
    if name == "adm_d" and min(v) < 0:
      raise ConfigError(f"env.{name}: {v!r} must be >= 0 per axis")
  dims = parse_axes(c.action_dims, "env.action_dims")
  parse_groups(c.action_groups, dims, "env.action_groups")
  if c.solref_timeconst < 2 * c.control_dt / c.substeps - 1e-12:
    raise ConfigError(f"env.solref_timeconst: {c.solref_timeconst} must be >= 2 x timestep "
                      f"({2 * c.control_dt / c.substeps:g}); raise substeps or the time constant")


def validate_env(c) -> ml_collections.ConfigDict:
  """Checks an `env` section; raises ConfigError with one line naming the field."""
  d = c.to_dict() if isinstance(c, ml_collections.ConfigDict) else dict(c)
  validate(d, ENV_SCHEMA, root="env")
  _check_tuples(c)
  return c


def load_peg(name_or_path: str) -> ml_collections.ConfigDict:
  """A validated peg config from `configs/assembly/pegs/<name>.py` or a file path."""
  path = name_or_path if name_or_path.endswith(".py") else os.path.join(PEG_DIR, f"{name_or_path}.py")
  if not os.path.exists(path):
    known = sorted(f[:-3] for f in os.listdir(PEG_DIR) if f.endswith(".py") and not f.startswith("_"))
    raise ConfigError(f"env.peg: {name_or_path!r} not found; known pegs: {', '.join(known)} (or a .py path)")
  return validate_peg(load_config_file(path, what="env.peg"))
