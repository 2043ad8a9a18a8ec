"""Peg-in-hole on MJX physics behind Brax's `Env` interface.

`PegInHoleEnv(env_config)` is a `brax.envs.base.Env`: `reset(rng)` and
`step(state, action)` over `brax.envs.base.State`, pure and jit/vmap-able, so
Brax's wrappers (`VmapWrapper`, `EpisodeWrapper`, `AutoResetWrapper`) and
trainers run on it unchanged. Everything an episode carries (the MJX data, the
admittance state, the RL offset, the sampled friction and clearance) lives in
`state.pipeline_state` (`AssemblyState`), because Brax's auto-reset restores
the pipeline state and the observation but not `info`.

The task semantics are `control_brax.task`'s, shared with the C-engine adapter
(`control_brax.gym_env`).

Physics backends (`env.backend`): "mjx" steps MJX inside the jit'd program (the engine for accelerators);
"mujoco" steps MuJoCo's C engine for the whole batch in native threads through one `jax.pure_callback` per
control step (`control_brax.cengine`; the engine for CPUs, where MJX runs at about a tenth of its speed);
"auto" picks "mujoco" when JAX's default backend is the CPU and "mjx" otherwise. Both run the same task code
and return the same `State`; only `state.pipeline_state.data` differs (`mjx.Data`, or `CData` with the C
engine's carried state and the pose and velocities the task reads).
"""

from __future__ import annotations

import control_brax.mujoco_setup  # noqa: F401 (first: MuJoCo without its warp notices or log file)

# isort: split
import functools

import jax
import jax.numpy as jnp
import mujoco
from brax.envs.base import Env, State
from flax import struct
from mujoco import mjx

from confspec import ConfigError
from control_brax import task
from control_brax.config import BACKENDS, base_env_config, load_peg, validate_env
from control_brax.geometry import PhysicsSpec, build_mjcf, peg_geoms


def physics_spec(env) -> PhysicsSpec:
  """Solver and holder settings of an `env` section."""
  return PhysicsSpec(
      timestep=env.control_dt / env.substeps, iterations=env.solver_iterations, ls_iterations=env.ls_iterations,
      solref=(env.solref_timeconst, 1.0), solimp=(0.95, 0.99, env.solimp_width), kp_trans=env.kp_trans,
      kv_trans=env.kv_trans, kp_rot=env.kp_rot, kv_rot=env.kv_rot, prune_margin=env.prune_margin)


def penetration(data, floor_id: int) -> tuple[jax.Array, jax.Array]:
  """Deepest contact penetration (m, >= 0) into the hole's walls and into its floor, in MJX data.

  MJX keeps a fixed-size contact array (inactive contacts have positive
  distance); `_impl` is where MJX 3.x stores it.
  """
  con = data._impl.contact
  on_floor = jnp.any(con.geom == floor_id, axis=-1)
  depth = jnp.maximum(-con.dist, 0.0)
  return jnp.max(jnp.where(on_floor, 0.0, depth), initial=0.0), jnp.max(jnp.where(on_floor, depth, 0.0), initial=0.0)


class Model:
  """The compiled MuJoCo model of one env config, with what randomisation touches."""

  def __init__(self, env=None, peg=None):
    self.env = validate_env(env if env is not None else base_env_config())
    self.peg = peg if peg is not None else load_peg(self.env.peg)
    self.spec = task.make_spec(self.env, self.peg)
    self.xml = build_mjcf(self.peg, physics_spec(self.env))
    self.mj_model = mujoco.MjModel.from_xml_string(self.xml)
    names = [g.name for g in peg_geoms(self.peg)]
    self.peg_geom_ids = tuple(mujoco.mj_name2id(self.mj_model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in names)
    self.peg_geom_size = self.mj_model.geom_size[list(self.peg_geom_ids)].copy()
    self.floor_id = mujoco.mj_name2id(self.mj_model, mujoco.mjtObj.mjOBJ_GEOM, "floor")

  def shrunk_sizes(self, shrink, xp):
    """Peg geom sizes with the section shrunk by `shrink` per side (the clearance grows by it)."""
    base = xp.asarray(self.peg_geom_size)
    if self.peg.kind == "round":  # capsule: radius only
      return base - xp.asarray([1.0, 0.0, 0.0]) * shrink
    return base - xp.asarray([1.0, 1.0, 0.0]) * shrink


def resolve_backend(name: str) -> str:
  """"mjx" or "mujoco" for an `env.backend` value ("auto": the C engine on a CPU, MJX on an accelerator)."""
  if name not in BACKENDS:
    raise ConfigError(f"env.backend: {name!r}; allowed: {', '.join(BACKENDS)}")
  if name == "auto":
    return "mujoco" if jax.default_backend() == "cpu" else "mjx"
  return name


@struct.dataclass
class CData:
  """A world's physics between control steps on the C engine (see control_brax.cengine)."""

  words: jax.Array  # uint32 (2 * nstate,): the float64 full physics state's bytes
  fresh: jax.Array  # bool: just reset; the host builds the state from qpos
  qpos: jax.Array
  qvel: jax.Array


@struct.dataclass
class AssemblyState:
  """Everything one episode carries (Brax's auto-reset restores it whole)."""

  data: mjx.Data | CData
  t: jax.Array  # control steps taken
  start: jax.Array  # (6,) initial tip pose = the robot's belief of the hole's pose
  adm_x: jax.Array
  adm_v: jax.Array
  rl: jax.Array  # accumulated RL pose offset
  wrench: jax.Array  # last control period's mean contact wrench
  depth: jax.Array  # insertion depth fraction
  peak_force: jax.Array
  friction: jax.Array
  shrink: jax.Array
  rng: jax.Array


class PegInHoleEnv(Env):
  """Brax env: one peg geometry, compliance controller in JAX, MJX physics."""

  def __init__(self, env=None, peg=None):
    self.model = Model(env, peg)
    self.spec = self.model.spec
    self._backend = resolve_backend(self.model.env.backend)
    if self._backend == "mujoco":
      try:
        from control_brax.cengine import CEngine  # noqa: PLC0415
      except ImportError as e:  # MuJoCo without its native batched stepper
        raise ConfigError(f"env.backend: 'mujoco' needs mujoco.rollout (MuJoCo >= 3.3; installed "
                          f"{mujoco.__version__}): {e}; or set env.backend=mjx") from None
      self.engine = CEngine(self.model, self.model.env.threads)
    else:
      self.sys = mjx.put_model(self.model.mj_model)

  # -- Brax Env interface
  @property
  def observation_size(self) -> int:
    return self.spec.observation_size

  @property
  def action_size(self) -> int:
    return self.spec.action_size

  @property
  def backend(self) -> str:
    """The physics engine ("mjx" or "mujoco"); Brax's `Env.backend`."""
    return self._backend

  @property
  def dt(self) -> float:
    return self.spec.dt

  def reset(self, rng: jax.Array) -> State:
    rng, key = jax.random.split(rng)
    start, friction, shrink = task.sample_episode(self.spec, jax.random.uniform(key, (8,)), jnp)
    return self.reset_to(start, friction, shrink, rng)

  def reset_to(self, start, friction, shrink, rng) -> State:
    """The episode starting at tip pose `start` (6,) with the given friction and clearance shrink."""
    zeros = jnp.zeros(6)
    if self._backend == "mujoco":
      data = CData(words=jnp.zeros(self.engine.state_words, jnp.uint32), fresh=jnp.ones((), bool),
                   qpos=jnp.asarray(start, jnp.float32), qvel=zeros)
    else:
      sys = self._sys(friction, shrink)
      data = mjx.make_data(sys)
      data = data.replace(qpos=start, ctrl=start)
      data = mjx.forward(sys, data)
    ps = AssemblyState(data=data, t=jnp.zeros((), jnp.int32), start=start, adm_x=zeros, adm_v=zeros, rl=zeros,
                       wrench=zeros, depth=jnp.zeros(()), peak_force=jnp.zeros(()), friction=jnp.asarray(friction),
                       shrink=jnp.asarray(shrink), rng=rng)
    obs = self._observe(ps)
    metrics = {"success": jnp.zeros(()), "failure": jnp.zeros(()), "depth": jnp.zeros(()),
               "force": jnp.zeros(()), "peak_force": jnp.zeros(()), "penetration": jnp.zeros(()),
               "floor_penetration": jnp.zeros(())}
    return State(pipeline_state=ps, obs=obs, reward=jnp.zeros(()), done=jnp.zeros(()), metrics=metrics,
                 info={"truncation": jnp.zeros(())})

  def step(self, state: State, action: jax.Array) -> State:
    ps: AssemblyState = state.pipeline_state
    spec = self.spec
    cmd, adm_x, adm_v, rl = task.controller_step(spec, ps.t, ps.start, ps.adm_x, ps.adm_v, ps.rl, ps.wrench,
                                                 action, jnp)
    if self._backend == "mujoco":
      data, wrench, (pen, floor_pen) = self._c_physics(ps, cmd)
    else:
      data, wrench, (pen, floor_pen) = self._physics(self._sys(ps.friction, ps.shrink), ps.data, cmd)
    t = ps.t + 1
    reward, done, success, failure, depth, force = task.reward_and_done(spec, data.qpos, wrench, ps.depth, t, jnp)
    ps = ps.replace(data=data, t=t, adm_x=adm_x, adm_v=adm_v, rl=rl, wrench=jnp.where(jnp.isfinite(wrench),
                    wrench, 0.0), depth=depth, peak_force=jnp.maximum(ps.peak_force, force),
                    rng=jax.random.fold_in(ps.rng, t))
    obs = self._observe(ps)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    # dict(state.metrics, ...): wrappers (Brax's EvalWrapper) add their own keys, which must survive a step
    metrics = dict(state.metrics, success=f32(success), failure=f32(failure), depth=f32(depth), force=f32(force),
                   peak_force=f32(ps.peak_force), penetration=f32(pen), floor_penetration=f32(floor_pen))
    truncation = f32((t >= spec.episode_steps) & ~success & ~failure)
    info = dict(state.info, truncation=truncation)
    return state.replace(pipeline_state=ps, obs=jnp.nan_to_num(obs), reward=f32(reward), done=f32(done),
                         metrics=metrics, info=info)

  # -- internals
  def _sys(self, friction, shrink):
    """The MJX model with this episode's friction and clearance (batched under vmap)."""
    pf = self.sys.pair_friction.at[:, :2].set(friction)
    size = self.sys.geom_size.at[jnp.asarray(self.model.peg_geom_ids)].set(self.model.shrunk_sizes(shrink, jnp))
    return self.sys.replace(pair_friction=pf, geom_size=size)

  def _physics(self, sys, data, ctrl):
    """`substeps` MJX steps at a fixed servo command; returns data and the mean contact wrench."""
    data = data.replace(ctrl=ctrl)

    def body(d, _):
      d = mjx.step(sys, d)
      return d, (d.qfrc_constraint, *penetration(d, self.model.floor_id))

    data, (wrenches, pen, floor_pen) = jax.lax.scan(body, data, None, length=self.spec.substeps)
    return data, wrenches.mean(axis=0), (pen.max(), floor_pen.max())

  def _c_physics(self, ps: AssemblyState, ctrl):
    """The same control period on the C engine: one host call for the whole (vmapped) batch."""
    from control_brax.cengine import readout  # noqa: PLC0415

    d, eng = ps.data, self.engine
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    shapes = (jax.ShapeDtypeStruct(d.words.shape, jnp.uint32), f32((eng.substeps, 6)), f32((6,)),
              f32((eng.substeps, eng.base.nsensordata)))
    words, q_all, qvel, sens = jax.pure_callback(
        eng.step, shapes, d.words, d.fresh, d.qpos, ctrl.astype(jnp.float32), ps.friction, ps.shrink,
        vmap_method="broadcast_all")
    q_pre = jnp.concatenate([d.qpos[None], q_all[:-1]])
    wrench, pen, floor_pen = readout(sens, q_pre, eng.pair_on_floor, jnp)
    return CData(words=words, fresh=jnp.zeros((), bool), qpos=q_all[-1], qvel=qvel), wrench, (pen, floor_pen)

  def _observe(self, ps: AssemblyState):
    noise = jax.random.normal(ps.rng, (12,)) if (self.spec.obs_force_noise or self.spec.obs_pose_noise) else (
        jnp.zeros(12))
    return task.observe(self.spec, ps.wrench, ps.data.qpos, ps.data.qvel, noise, jnp)
