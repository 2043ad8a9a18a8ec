"""MuJoCo's C engine stepping a batch of worlds in threads, for `PegInHoleEnv` with `env.backend = "mujoco"`.

The env's task code (controller, observation, reward, termination) stays in JAX; one control step of the whole
batch is one `jax.pure_callback` into `CEngine.step`, which runs `substeps` C-engine steps of every world with
`mujoco.rollout` on a pool of native threads and returns what the task reads. Under `jax.vmap` (worlds, seeds)
the callback receives the whole batch at once (`vmap_method="broadcast_all"`), so the host is entered once per
control step, not once per world.

Our definitions:
* A world's state between control steps is MuJoCo's full physics state (`mjSTATE_FULLPHYSICS`: time, qpos,
  qvel, ...) in float64, carried through JAX as its raw bytes (uint32 words, so it survives without x64 and
  physics never rounds to float32 between control steps). A freshly reset world carries a `fresh` flag and its
  float32 start pose instead; the host widens it (qvel = 0, time = 0). The C engine's warm start is off in our
  MJCF, so this state is the whole state: the same inputs give the same outputs, and resume is exact.
* Per-world physics (friction of every contact pair, the peg section's clearance shrink) is applied to one
  `MjModel` copy per world before each call (only the worlds whose values changed are rewritten).
* The wrist wrench is `qfrc_constraint` averaged over the control period, as in MJX and the gymnasium adapter.
  `mujoco.rollout` returns states and sensor values, not `qfrc_constraint`, so the C-engine model carries a
  `netforce` contact sensor on the peg's subtree (net contact force, torque at the force centroid, centroid) and
  the host maps it to the holder's joints: slides x, y, z take the force, hinges rx, ry, rz take the torque about
  the tip (the joints' anchor) projected on their axes at the pre-step pose. Only contacts act as constraints
  in our MJCF (no joint limits or equalities), so this is `qfrc_constraint` exactly (checked against
  `mj_step`'s own to 1e-12 in tests/control_brax/test_cengine.py).
* Penetration: one contact sensor per contact pair (found, min distance); the walls' and the floor's deepest
  penetration over the period, as MJX's contact arrays give it.
"""

from __future__ import annotations

import control_brax.mujoco_setup  # noqa: F401 (first: MuJoCo without its warp notices or log file)

# isort: split
import copy
import os
import threading

import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from confspec import ConfigError

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


def default_threads() -> int:
  """The cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def _sensor_block(mj_model, floor_id: int) -> tuple[str, np.ndarray]:
  """The MJCF sensors the host reads, and which pair sensors touch the floor."""
  name = lambda g: mujoco.mj_id2name(mj_model, mujoco.mjtObj.mjOBJ_GEOM, int(g))  # noqa: E731
  rows = ["<contact name='wrench' subtree1='peg' num='1' data='force torque pos' reduce='netforce'/>"]
  on_floor = []
  for i in range(mj_model.npair):
    g1, g2 = mj_model.pair_geom1[i], mj_model.pair_geom2[i]
    rows.append(f"<contact name='pair{i}' geom1='{name(g1)}' geom2='{name(g2)}' num='1' data='found dist' "
                f"reduce='mindist'/>")
    on_floor.append(floor_id in (g1, g2))
  return "<sensor>" + "".join(rows) + "</sensor>", np.asarray(on_floor, bool)


def readout(sens, q_pre, pair_on_floor, xp):
  """(mean wrench (..., 6), wall penetration (...), floor penetration (...)) of a control period.

  `sens` (..., substeps, nsensordata): the C-engine model's sensors after each substep; `q_pre` (..., substeps,
  6): the pose each substep started from (the contact forces are computed there). Array module `xp` (numpy or
  jax.numpy): the backend runs it inside the jit'd program, fused, rather than on the host.
  """
  force, torque, centroid = sens[..., 0:3], sens[..., 3:6], sens[..., 6:9]
  torque_tip = torque + xp.cross(centroid - q_pre[..., :3], force)
  cx, sx = xp.cos(q_pre[..., 3]), xp.sin(q_pre[..., 3])
  cy, sy = xp.cos(q_pre[..., 4]), xp.sin(q_pre[..., 4])
  # MuJoCo composes a body's joints in order: the hinge axes are e_x, R_x e_y, R_x R_y e_z
  t_rx = torque_tip[..., 0]
  t_ry = cx * torque_tip[..., 1] + sx * torque_tip[..., 2]
  t_rz = sy * torque_tip[..., 0] - sx * cy * torque_tip[..., 1] + cx * cy * torque_tip[..., 2]
  joint = xp.stack([t_rx, t_ry, t_rz], -1)
  wrench = -xp.concatenate([force, joint], -1).mean(axis=-2)  # the sensor reads the peg's partner side
  pairs = sens[..., 9:].reshape(sens.shape[:-1] + (-1, 2))
  depth = xp.where(pairs[..., 0] > 0, xp.maximum(-pairs[..., 1], 0.0), 0.0).max(axis=-2)  # (..., npair)
  on_floor = xp.asarray(pair_on_floor)
  wall = xp.where(on_floor, 0.0, depth).max(axis=-1)
  floor = xp.where(on_floor, depth, 0.0).max(axis=-1)
  return wrench, wall, floor


class CEngine:
  """Batched C-engine stepping of one env config's worlds (see the module docstring)."""

  def __init__(self, model, threads: int = 0):
    """`model`: a `control_brax.envs.Model`; `threads`: native threads (0 = every core this process has)."""
    self.model = model
    self.substeps = model.spec.substeps
    block, self.pair_on_floor = _sensor_block(model.mj_model, model.floor_id)
    xml = model.xml.replace("</mujoco>", block + "\n</mujoco>")
    try:
      self.base = mujoco.MjModel.from_xml_string(xml)
    except ValueError as e:
      raise ConfigError(f"env.peg: MuJoCo's C engine rejects the geometry: {str(e).splitlines()[0]}") from None
    if self.base.neq or self.base.jnt_limited.any():
      raise ConfigError("env.backend: the C-engine wrench assumes contacts are the only constraints")
    self.threads = threads or default_threads()
    self.nstate = mujoco.mj_stateSize(self.base, _FULL)
    self._qpos_at = mujoco.mj_stateSize(self.base, mujoco.mjtState.mjSTATE_TIME)
    self._qvel_at = self._qpos_at + self.base.nq
    data = mujoco.MjData(self.base)
    self._template = np.empty(self.nstate)
    mujoco.mj_getState(self.base, data, self._template, _FULL)
    self._datas = [mujoco.MjData(self.base) for _ in range(self.threads)]
    self._pool = mj_rollout.Rollout(nthread=self.threads if self.threads > 1 else 0)
    self._models: list = []
    self._params = np.zeros((0, 2))
    self._base_friction = self.base.pair_friction.copy()
    self._peg_ids = list(model.peg_geom_ids)
    self._buffers: dict = {}
    self._lock = threading.Lock()  # the model copies and buffers serve one call at a time
    self.record: list | None = None  # set to a list to keep every call's (init, ctrl, friction, shrink)

  @property
  def state_words(self) -> int:
    """uint32 words of one world's carried state."""
    return 2 * self.nstate

  def close(self) -> None:
    self._pool.close()

  def _world_models(self, friction, shrink) -> list:
    """One MjModel per world with its friction and shrink applied (only changed worlds are rewritten)."""
    n = friction.shape[0]
    while len(self._models) < n:
      self._models.append(copy.copy(self.base))
      self._params = np.concatenate([self._params, np.full((1, 2), np.nan)])
    params = np.stack([friction, shrink], -1)
    changed = np.nonzero(np.any(params != self._params[:n], axis=-1))[0]
    for i in changed:
      m = self._models[i]
      m.pair_friction[:] = self._base_friction
      m.pair_friction[:, :2] = friction[i]
      m.geom_size[self._peg_ids] = self.model.shrunk_sizes(shrink[i], np)
    self._params[changed] = params[changed]
    return self._models[:n]

  def initial_states(self, state_words, fresh, qpos) -> np.ndarray:
    """(n, nstate) float64 states: carried bytes, or the start pose widened for fresh worlds."""
    init = np.ascontiguousarray(state_words, dtype=np.uint32).view(np.float64).copy()
    if fresh.any():
      init[fresh] = self._template
      init[fresh, self._qpos_at:self._qvel_at] = qpos[fresh]
    return init

  def rollout(self, init, ctrl, friction, shrink):
    """Raw stepping: `substeps` steps of every world at fixed ctrl (n, nu); (states, sensordata) per substep.

    The outputs are buffers reused by the next call of the same batch size.
    """
    n = init.shape[0]
    if n not in self._buffers:
      self._buffers = {n: (np.empty((n, self.substeps, self.nstate)),
                           np.empty((n, self.substeps, self.base.nsensordata)))}
    state, sens = self._buffers[n]
    control = np.ascontiguousarray(np.broadcast_to(ctrl[:, None, :], (n, self.substeps, ctrl.shape[-1])))
    self._pool.rollout(self._world_models(friction, shrink), self._datas, np.ascontiguousarray(init), control,
                       nstep=self.substeps, skip_checks=True, state=state, sensordata=sens)
    return state, sens

  def step(self, state_words, fresh, qpos, ctrl, friction, shrink):
    """One control step of a batch (any leading shape): the pure_callback body.

    Returns (state words, qpos after each substep (..., substeps, nq), final qvel, sensors after each substep
    (..., substeps, nsensordata)), float32 but the words; `readout` turns the sensors into the task's figures.
    """
    with self._lock:
      return self._step(state_words, fresh, qpos, ctrl, friction, shrink)

  def _step(self, state_words, fresh, qpos, ctrl, friction, shrink):
    lead = np.shape(fresh)
    n = int(np.prod(lead, dtype=np.int64))
    as64 = lambda x, *shape: np.asarray(x, np.float64).reshape((n,) + shape)  # noqa: E731
    words = np.asarray(state_words).reshape(n, -1)
    fresh = np.asarray(fresh, bool).reshape(n)
    init = self.initial_states(words, fresh, as64(qpos, -1))
    args = (init, as64(ctrl, -1), as64(friction), as64(shrink))
    if self.record is not None:
      self.record.append(args)
    states, sens = self.rollout(*args)
    last = states[:, -1]
    q_at, v_at, nq, nv, m = self._qpos_at, self._qvel_at, self.base.nq, self.base.nv, self.substeps
    return (last.copy().view(np.uint32).reshape(lead + (self.state_words,)),
            states[..., q_at:v_at].astype(np.float32).reshape(lead + (m, nq)),
            last[:, v_at:v_at + nv].astype(np.float32).reshape(lead + (nv,)),
            sens.astype(np.float32).reshape(lead + (m, self.base.nsensordata)))
