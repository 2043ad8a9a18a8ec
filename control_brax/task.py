"""The task's semantics, shared by the MJX env and the C-engine gymnasium adapter.

Every function here is pure and takes the array module `xp` (`numpy` or
`jax.numpy`), so both engines run literally the same controller, observation,
reward and termination code (the engines differ only in how they step physics).

Our definitions (docs/control_brax.md):
* Pose: the peg tip's (x, y, z, rx, ry, rz) in the hole frame (mouth centre at
  the origin, z up); the holder's joints are exactly these coordinates.
* Wrist force/torque: the contact wrench on the peg in the holder's joint frame
  (MuJoCo's `qfrc_constraint`), averaged over the control period's physics steps,
  what a wrist sensor reads once the holder's inertia is compensated.
* Reference: the robot believes the hole is where the peg starts laterally (the
  initial error is unknown to it) and descends at `insert_speed` to
  `insert_overshoot` below the floor.
* Admittance (compliance=True): M a + D v + K x = F - F_desired per axis,
  integrated by implicit Euler once per control period (stable for any gains);
  x is clipped. The servo command is reference + x + the RL offset.
* RL action: a pose increment on the driven axes (PEAD groups tie several axes
  to one output), accumulated into a clipped offset; with `gain_action`, extra
  components scale K by exp(range * a). compliance=False drops the admittance
  term: the command is reference + RL offset (the servo's stiffness remains).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from control_brax.config import parse_axes, parse_groups

TRANS_SCALE = 0.005  # m, normalises positions in observations and the alignment reward
ROT_SCALE = 0.05  # rad
FORCE_SCALE = 10.0  # N
# Observations are clipped to +-OBS_CLIP normalised units (our definition, so that the gymnasium adapter can
# declare finite bounds): about 7x the force limit's 15 units (150 N) and 40x the workspace's 2.4; only the
# terminal observation of a failed episode can come near it.
OBS_CLIP = 100.0
TORQUE_SCALE = 0.5  # N m


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Static numbers of one environment (hashable: a jit static argument)."""

  dt: float
  substeps: int
  episode_steps: int
  hole_depth: float
  z_start: float
  z_end: float
  insert_speed: float
  compliance: bool
  adm_m: tuple
  adm_d: tuple
  adm_k: tuple
  desired_force: tuple
  adm_limit: tuple
  action_map: tuple  # (6, n_pose_outputs) rows of pose increment per action component
  gain_map: tuple  # (6, n_gain_outputs) or () without gain actions
  rl_limit: tuple
  gain_log_range: float
  obs_velocities: bool
  obs_force_noise: float
  obs_pose_noise: float
  success_depth: float
  force_limit: float
  workspace: float
  reward_progress: float
  reward_align: float
  reward_force: float
  force_threshold: float
  success_bonus: float
  # initial-error and physics distributions (uniform): +- bounds and ranges
  start_bounds: tuple
  friction_range: tuple
  extra_clearance: float
  peg_kind: str

  @property
  def n_pose_actions(self) -> int:
    return len(self.action_map[0])

  @property
  def action_size(self) -> int:
    return self.n_pose_actions + (len(self.gain_map[0]) if self.gain_map else 0)

  @property
  def observation_size(self) -> int:
    return 18 if self.obs_velocities else 12


def make_spec(env, peg) -> TaskSpec:
  """A TaskSpec from a validated `env` section and peg config."""
  dims = parse_axes(env.action_dims, "env.action_dims")
  groups = parse_groups(env.action_groups, dims, "env.action_groups")
  scale = [env.action_scale_m] * 3 + [env.action_scale_rad] * 3
  amap = np.zeros((6, len(groups)))
  for j, g in enumerate(groups):
    for i in g:
      amap[dims[i], j] = scale[dims[i]]
  gmap = np.zeros((6, len(dims)))
  for j, a in enumerate(dims):
    gmap[a, j] = env.gain_log_range
  ev, es = peg.eval, env.error_scale
  lat, tilt, yaw = ev.lateral_m * es, math.radians(ev.tilt_deg) * es, math.radians(ev.yaw_deg) * es
  return TaskSpec(
      dt=env.control_dt, substeps=env.substeps, episode_steps=env.episode_steps, hole_depth=peg.hole_depth,
      z_start=env.start_height, z_end=-peg.hole_depth - env.insert_overshoot, insert_speed=env.insert_speed,
      compliance=env.compliance, adm_m=tuple(env.adm_m), adm_d=tuple(env.adm_d), adm_k=tuple(env.adm_k),
      desired_force=tuple(env.desired_force), adm_limit=(env.adm_max_offset,) * 3 + (env.adm_max_angle,) * 3,
      action_map=tuple(map(tuple, amap)), gain_map=tuple(map(tuple, gmap)) if env.gain_action else (),
      rl_limit=(env.action_max_offset_m,) * 3 + (env.action_max_angle,) * 3, gain_log_range=env.gain_log_range,
      obs_velocities=env.obs_velocities, obs_force_noise=env.obs_force_noise, obs_pose_noise=env.obs_pose_noise,
      success_depth=env.success_fraction * peg.hole_depth, force_limit=env.force_limit, workspace=env.workspace_m,
      reward_progress=env.reward_progress, reward_align=env.reward_align, reward_force=env.reward_force,
      force_threshold=env.force_threshold, success_bonus=env.success_bonus,
      start_bounds=(lat, lat, 0.0, tilt, tilt, yaw),
      friction_range=(ev.friction_lo, ev.friction_hi) if env.randomize_physics else (0.3, 0.3),
      extra_clearance=ev.extra_clearance_m if env.randomize_physics else 0.0,
      peg_kind=peg.kind)


def sample_episode(spec: TaskSpec, u, xp):
  """Initial pose, friction and clearance shrink from 8 uniforms in [0, 1).

  Each engine draws `u` from its own generator; passing the same `u` to both
  gives the same episode (how the engine-agreement test pairs them).
  """
  bounds = xp.asarray(spec.start_bounds)
  start = (2 * u[:6] - 1) * bounds + xp.asarray([0, 0, spec.z_start, 0, 0, 0])
  lo, hi = spec.friction_range
  friction = lo + (hi - lo) * u[6]
  shrink = spec.extra_clearance * u[7]
  return start, friction, shrink


def reference(spec: TaskSpec, t, start, xp):
  """The robot's planned tip pose at control step t: start laterally, descending in z."""
  z = xp.maximum(spec.z_start - spec.insert_speed * spec.dt * t, spec.z_end)
  return xp.concatenate([start[:2], xp.reshape(z, (1,)), start[3:]])


def split_action(spec: TaskSpec, action, xp):
  """Clipped action -> (pose increment (6,), stiffness scale (6,))."""
  a = xp.clip(action, -1.0, 1.0)
  n = spec.n_pose_actions
  inc = xp.asarray(spec.action_map) @ a[:n]
  if spec.gain_map:
    k_scale = xp.exp(xp.asarray(spec.gain_map) @ a[n:])
  else:
    k_scale = xp.ones(6)
  return inc, k_scale


def admittance(spec: TaskSpec, x, v, wrench, k_scale, xp):
  """One implicit-Euler step of M a + D v + K x = wrench - desired; returns clipped (x, v)."""
  m, d, k = xp.asarray(spec.adm_m), xp.asarray(spec.adm_d), xp.asarray(spec.adm_k) * k_scale
  h = spec.dt
  e = wrench - xp.asarray(spec.desired_force)
  v_new = (m * v / h + e - k * x) / (m / h + d + k * h)
  lim = xp.asarray(spec.adm_limit)
  x_new = xp.clip(x + h * v_new, -lim, lim)
  v_new = xp.where(xp.abs(x_new) >= lim, 0.0, v_new)
  return x_new, v_new


def controller_step(spec: TaskSpec, t, start, adm_x, adm_v, rl, wrench, action, xp):
  """Servo command for control step t and the controller's next state (adm_x, adm_v, rl)."""
  inc, k_scale = split_action(spec, action, xp)
  lim = xp.asarray(spec.rl_limit)
  rl = xp.clip(rl + inc, -lim, lim)
  if spec.compliance:
    adm_x, adm_v = admittance(spec, adm_x, adm_v, wrench, k_scale, xp)
  cmd = reference(spec, t + 1, start, xp) + adm_x + rl
  return cmd, adm_x, adm_v, rl


def observe(spec: TaskSpec, wrench, qpos, qvel, noise, xp):
  """[F/T (6), pose error to the success pose (6), (velocities (6))], normalised and clipped to +-OBS_CLIP;
  noise ~ N(0, 1) of obs size."""
  scale_f = xp.asarray([FORCE_SCALE] * 3 + [TORQUE_SCALE] * 3)
  scale_p = xp.asarray([TRANS_SCALE] * 3 + [ROT_SCALE] * 3)
  goal = xp.asarray([0, 0, -spec.success_depth, 0, 0, 0])
  f = wrench / scale_f + spec.obs_force_noise / FORCE_SCALE * noise[:6]
  p = (qpos - goal) / scale_p + spec.obs_pose_noise / TRANS_SCALE * noise[6:12]
  parts = [f, p]
  if spec.obs_velocities:
    parts.append(qvel / (scale_p / 0.1))
  return xp.clip(xp.concatenate(parts), -OBS_CLIP, OBS_CLIP)


def depth_fraction(spec: TaskSpec, qpos, xp):
  return xp.clip(-qpos[2] / spec.success_depth, 0.0, 1.0)


def reward_and_done(spec: TaskSpec, qpos, wrench, prev_depth, t, xp):
  """(reward, done, success, failure, depth fraction, force norm) after control step t (t counts from 1)."""
  depth = depth_fraction(spec, qpos, xp)
  force = xp.sqrt(xp.sum(wrench[:3] ** 2))
  finite = xp.all(xp.isfinite(qpos)) & xp.isfinite(force)
  success = (depth >= 1.0) & finite
  lateral = xp.sqrt(qpos[0] ** 2 + qpos[1] ** 2)
  above = qpos[2] > spec.z_start + spec.workspace
  failure = (~finite) | (force > spec.force_limit) | (lateral > spec.workspace) | above
  align = lateral / TRANS_SCALE + xp.sqrt(xp.sum(qpos[3:] ** 2)) / ROT_SCALE
  over = xp.maximum(force - spec.force_threshold, 0.0) / max(spec.force_threshold, 1.0)
  reward = (spec.reward_progress * (depth - prev_depth) - spec.reward_align * align - spec.reward_force * over
            + spec.success_bonus * success)
  reward = xp.where(finite, reward, -spec.success_bonus)
  done = success | failure | (t >= spec.episode_steps)
  return reward, done, success, failure, xp.where(finite, depth, 0.0), xp.where(finite, force, 0.0)
