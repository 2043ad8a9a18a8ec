"""The assembly environment's config: declarations (defaults, ranges), validation, peg-file loading.

An RL config (`configs/assembly/*.py`) has an `env` section built from
`base_env_config()`, i.e. from the defaults declared in `ENV_SCHEMA`; the
geometry comes from a peg file named by `env.peg` (`configs/assembly/pegs/<name>.py`,
or a path to any file returning `base_peg()`). Units: metres, radians, newtons,
seconds; per-axis tuples are ordered (x, y, z, rx, ry, rz).

Our definitions of the action layout: `env.action_dims` is a list of the pose
axes the action drives, e.g. ('x', 'y', 'rz'); `env.action_groups` (PEAD) is a
list of groups, each a list of axes of `action_dims` tied to one action output,
covering every driven axis exactly once, e.g. (('x', 'y'), ('z',), ('rx', 'ry'),
('rz',)); the empty list is one output per driven axis.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from confspec import ConfigError, Field, defaults, validate
from control_brax.geometry import validate_peg
from runkit.configfile import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEG_DIR = os.path.join(REPO, "configs", "assembly", "pegs")
POSE_AXES = ("x", "y", "z", "rx", "ry", "rz")

AXES = Field(tuple, POSE_AXES, item=str, choices=POSE_AXES, min_len=1, unique=True,
             doc="pose axes from x, y, z, rx, ry, rz")
GROUPS = Field(tuple, (), item=AXES,
               doc="groups of action axes tied to one output, covering env.action_dims; () = one output per axis")


def _per_axis(default, lo=None, lo_open=False, doc=""):
  return Field(tuple, default, item=float, length=6, lo=lo, lo_open=lo_open, doc=doc + " (x, y, z, rx, ry, rz)")


BACKENDS = ("auto", "mjx", "mujoco")

ENV_SCHEMA = {
    "backend": Field(str, "auto", choices=BACKENDS,
                     doc="physics engine: mjx (in the jit'd program; accelerators), mujoco (MuJoCo's C engine in "
                         "native threads; CPUs), auto (mujoco on a CPU, mjx otherwise)"),
    "threads": Field(int, 0, lo=0, hi=1024, doc="C-engine threads (backend mujoco); 0 = every core of this process"),
    "peg": Field(str, "square", doc="peg file name under configs/assembly/pegs (e.g. l_shape) or a path"),
    "control_dt": Field(float, 0.01, lo=0.001, hi=0.1, doc="policy and admittance period (s)"),
    "substeps": Field(int, 10, lo=1, hi=100, doc="physics steps per control step (timestep = control_dt / substeps)"),
    "solver_iterations": Field(int, 8, lo=1, hi=100),
    "ls_iterations": Field(int, 8, lo=1, hi=100),
    "solref_timeconst": Field(float, 0.002, lo=0.0002, hi=0.05,
                              doc="contact stiffness time constant (s), >= 2 timesteps"),
    "solimp_width": Field(float, 0.001, lo=0.00001, hi=0.01, doc="penetration (m) over which contact impedance "
                                                                  "rises from 0.95 to 0.99"),
    "prune_margin": Field(float, 0.012, lo=0, hi=0.1,
                          doc="drop contact pairs farther apart than this (m); 0 keeps all"),
    "kp_trans": Field(float, 20000.0, lo=1, doc="holder servo stiffness (N/m): the robot's position loop"),
    "kv_trans": Field(float, 200.0, lo=0),
    "kp_rot": Field(float, 50.0, lo=0.01, doc="holder servo stiffness (N m/rad)"),
    "kv_rot": Field(float, 1.0, lo=0),
    "episode_steps": Field(int, 120, lo=2, hi=10000),
    "start_height": Field(float, 0.002, lo=0, hi=0.05, doc="tip height above the hole's mouth at reset (m)"),
    "insert_speed": Field(float, 0.03, lo=0.001, hi=0.5, doc="reference descent speed (m/s)"),
    "insert_overshoot": Field(float, 0.003, lo=0, hi=0.05, doc="reference ends this far below the hole floor (m)"),
    "compliance": Field(bool, True, doc="admittance loop on (RL + compliance) or off (RL alone)"),
    "adm_m": _per_axis((1.0, 1.0, 1.0, 0.01, 0.01, 0.01), lo=0, lo_open=True,
                       doc="admittance mass per axis (kg, kg m^2)"),
    "adm_d": _per_axis((60.0, 60.0, 60.0, 0.6, 0.6, 0.6), lo=0, doc="admittance damping per axis"),
    "adm_k": _per_axis((400.0, 400.0, 400.0, 4.0, 4.0, 4.0), lo=0, lo_open=True,
                       doc="admittance stiffness per axis (N/m, N m/rad)"),
    "desired_force": _per_axis((0.0, 0.0, 5.0, 0.0, 0.0, 0.0),
                               doc="desired contact wrench on the peg (N, N m); +z = pressing down"),
    "adm_max_offset": Field(float, 0.008, lo=0, hi=0.05, doc="clip of the admittance translation offset (m)"),
    "adm_max_angle": Field(float, 0.15, lo=0, hi=0.5, doc="clip of the admittance rotation offset (rad)"),
    "action_dims": dataclasses.replace(AXES, doc="pose axes the action drives, e.g. ('x', 'y', 'rz')"),
    "action_groups": dataclasses.replace(GROUPS, doc="PEAD grouping: groups of action axes tied to one output, "
                                                     "e.g. (('x', 'y'), ('z',)); () = one output per axis"),
    "action_scale_m": Field(float, 0.0005, lo=0, hi=0.01, doc="pose increment per unit action, translation (m)"),
    "action_scale_rad": Field(float, 0.005, lo=0, hi=0.1, doc="pose increment per unit action, rotation (rad)"),
    "action_max_offset_m": Field(float, 0.006, lo=0, hi=0.05, doc="clip of the accumulated RL offset (m)"),
    "action_max_angle": Field(float, 0.1, lo=0, hi=0.5, doc="clip of the accumulated RL offset (rad)"),
    "gain_action": Field(bool, False, doc="extra action components scale K per driven axis by exp(range * a)"),
    "gain_log_range": Field(float, 1.0, lo=0, hi=5),
    "obs_velocities": Field(bool, False, doc="append the tip's 6 velocities to the observation"),
    "obs_force_noise": Field(float, 0.0, lo=0, doc="std of additive F/T noise (N; N m scaled by 0.05)"),
    "obs_pose_noise": Field(float, 0.0, lo=0, doc="std of additive pose noise (m; rad scaled by 10)"),
    "success_fraction": Field(float, 0.8, lo=0.1, hi=1.0, doc="success when tip depth >= this fraction of hole depth"),
    "force_limit": Field(float, 150.0, lo=1, doc="terminate when the contact force exceeds this (N)"),
    "workspace_m": Field(float, 0.012, lo=0.001, hi=0.1, doc="terminate when the tip leaves this lateral radius (m)"),
    "reward_progress": Field(float, 10.0, lo=0),
    "reward_align": Field(float, 0.1, lo=0),
    "reward_force": Field(float, 0.05, lo=0),
    "force_threshold": Field(float, 30.0, lo=0, doc="contact force above which the force penalty applies (N)"),
    "success_bonus": Field(float, 10.0, lo=0),
    "error_scale": Field(float, 1.0, lo=0, hi=3,
                         doc="multiplies the peg file's initial-error distribution (0 = aligned)"),
    "randomize_physics": Field(bool, True, doc="sample friction and clearance from the peg file's ranges"),
}


def base_env_config() -> ml_collections.ConfigDict:
  """The declared defaults: 100 Hz control over 1 kHz physics, a stiff holder and a soft admittance loop."""
  return defaults(ENV_SCHEMA)


def parse_axes(names, field: str) -> tuple[int, ...]:
  """Axis names ('x', 'y', 'rz') -> indices (0, 1, 5); raises ConfigError naming `field` on an unknown axis or
  a repeat."""
  AXES.check(field, names)
  return tuple(POSE_AXES.index(n) for n in names)


def parse_groups(groups, dims: tuple[int, ...], field: str) -> tuple[tuple[int, ...], ...]:
  """PEAD groups (('x', 'y'), ('z',), ...) -> index tuples into `dims`; () = one group per driven axis."""
  GROUPS.check(field, groups)
  if not groups:
    return tuple((i,) for i in range(len(dims)))
  out = []
  for group in groups:
    missing = [a for a in group if POSE_AXES.index(a) not in dims]
    if missing:
      raise ConfigError(f"{field}: axes {missing} are not in env.action_dims")
    out.append(tuple(dims.index(POSE_AXES.index(a)) for a in group))
  flat = sorted(i for g in out for i in g)
  if flat != list(range(len(dims))):
    raise ConfigError(f"{field}: {_as_tuple(groups)!r} must cover every axis of env.action_dims exactly once")
  return tuple(out)


def _as_tuple(v):
  return tuple(_as_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _cross_checks(c) -> None:
  dims = parse_axes(c.action_dims, "env.action_dims")
  parse_groups(c.action_groups, dims, "env.action_groups")
  if c.solref_timeconst < 2 * c.control_dt / c.substeps - 1e-12:
    raise ConfigError(f"env.solref_timeconst: {c.solref_timeconst} must be >= 2 x timestep "
                      f"({2 * c.control_dt / c.substeps:g}); raise substeps or the time constant")


def validate_env(c) -> ml_collections.ConfigDict:
  """Checks an `env` section; raises ConfigError with one line naming the field."""
  return validate(c, ENV_SCHEMA, checks=(_cross_checks,), root="env")


def load_peg(name_or_path: str) -> ml_collections.ConfigDict:
  """A validated peg config from `configs/assembly/pegs/<name>.py` or a file path."""
  path = name_or_path if name_or_path.endswith(".py") else os.path.join(PEG_DIR, f"{name_or_path}.py")
  if not os.path.exists(path):
    known = sorted(f[:-3] for f in os.listdir(PEG_DIR) if f.endswith(".py") and not f.startswith("_"))
    raise ConfigError(f"env.peg: {name_or_path!r} not found; known pegs: {', '.join(known)} (or a .py path)")
  return validate_peg(load_config_file(path, what="env.peg"))
