"""The same peg-in-hole task on MuJoCo's C engine behind `gymnasium.Env`.

Same MJCF, same controller, observation, reward and termination code as the MJX
env (`control_brax.task` with `xp=numpy`); only the physics stepping differs.
This is what CPU RL libraries (Stable-Baselines3) consume, and the reference the
MJX engine is checked against.

    env = PegInHoleGymEnv(env_config)         # or PegInHoleGymEnv(peg="l_shape"): the default env, that peg
    obs, info = env.reset(seed=0)            # or options={"u": 8 uniforms} for a chosen episode
    obs, reward, terminated, truncated, info = env.step(action)

Registered with gymnasium when `control_brax` is imported, one id per peg file under configs/assembly/pegs/:
`gymnasium.make("PegInHole-l_shape-v0")`, SB3's `make_vec_env("PegInHole-l_shape-v0", n_envs=8)`; keyword
arguments of `make` (`env=`, a config section) reach the constructor. The env ends its own episodes
(`env.episode_steps` truncates), so no TimeLimit wrapper is registered.

Observation bounds: +-`task.OBS_CLIP` per component (the task clips its normalised forces, torques, pose errors
and velocities there, in both engines); actions: [-1, 1] per output.
"""

from __future__ import annotations

import control_brax.mujoco_setup  # noqa: F401 (first: MuJoCo without its warp notices or log file)

# isort: split
import gymnasium as gym
import mujoco
import numpy as np

from control_brax import task
from control_brax.envs import Model


class PegInHoleGymEnv(gym.Env):
  """Gymnasium adapter over MuJoCo's C engine (one world, one thread)."""

  metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

  def __init__(self, env=None, peg=None, render_mode: str | None = None):
    if isinstance(peg, str):  # a peg file name or path: the env section's `peg`, its file loaded by Model
      from control_brax.config import base_env_config  # noqa: PLC0415

      env = (env if env is not None else base_env_config()).copy_and_resolve_references()
      env.peg, peg = peg, None
    if render_mode not in (None, "rgb_array"):
      raise ValueError(f"render_mode: {render_mode!r}; allowed: None, 'rgb_array'")
    self.model = Model(env, peg)
    self.task_spec = self.model.spec
    self.mj_model = self.model.mj_model
    self.data = mujoco.MjData(self.mj_model)
    self.render_mode = render_mode
    self._renderer = None
    self._pair_friction = self.mj_model.pair_friction.copy()
    self.observation_space = gym.spaces.Box(-task.OBS_CLIP, task.OBS_CLIP, (self.task_spec.observation_size,),
                                            np.float32)
    self.action_space = gym.spaces.Box(-1.0, 1.0, (self.task_spec.action_size,), np.float32)
    self._noise_rng = np.random.default_rng(0)

  def reset(self, *, seed: int | None = None, options: dict | None = None):
    super().reset(seed=seed)
    if seed is not None:
      self._noise_rng = np.random.default_rng(seed + 1)
    u = np.asarray(options["u"], dtype=np.float64) if options and "u" in options else self.np_random.random(8)
    start, friction, shrink = task.sample_episode(self.task_spec, u, np)
    self.set_physics(friction, shrink)
    mujoco.mj_resetData(self.mj_model, self.data)
    self.data.qpos[:] = start
    self.data.ctrl[:] = start
    mujoco.mj_forward(self.mj_model, self.data)
    self.t, self.start = 0, start
    self.adm_x, self.adm_v, self.rl, self.wrench = (np.zeros(6) for _ in range(4))
    self.depth, self.peak_force = 0.0, 0.0
    return self._observe(), {"friction": friction, "shrink": shrink}

  def set_physics(self, friction: float, shrink: float) -> None:
    """This episode's friction (all contact pairs) and clearance shrink of the peg's section."""
    self.mj_model.pair_friction[:] = self._pair_friction
    self.mj_model.pair_friction[:, :2] = friction
    self.mj_model.geom_size[list(self.model.peg_geom_ids)] = self.model.shrunk_sizes(shrink, np)

  def step(self, action):
    spec = self.task_spec
    cmd, self.adm_x, self.adm_v, self.rl = task.controller_step(
        spec, self.t, self.start, self.adm_x, self.adm_v, self.rl, self.wrench, np.asarray(action, np.float64), np)
    self.data.ctrl[:] = cmd
    acc, pen = np.zeros(6), 0.0
    for _ in range(spec.substeps):
      mujoco.mj_step(self.mj_model, self.data)
      acc += self.data.qfrc_constraint
      n = self.data.ncon
      if n:
        con = self.data.contact
        walls = (con.geom1[:n] != self.model.floor_id) & (con.geom2[:n] != self.model.floor_id)
        if walls.any():
          pen = max(pen, -float(con.dist[:n][walls].min()))
    wrench = acc / spec.substeps
    self.t += 1
    reward, done, success, failure, depth, force = task.reward_and_done(
        spec, self.data.qpos, wrench, self.depth, self.t, np)
    self.wrench = np.where(np.isfinite(wrench), wrench, 0.0)
    self.depth, self.peak_force = float(depth), max(self.peak_force, float(force))
    terminated = bool(success or failure)
    truncated = bool(done) and not terminated
    info = {"success": bool(success), "failure": bool(failure), "depth": self.depth, "force": float(force),
            "peak_force": self.peak_force, "penetration": pen}
    return self._observe(), float(reward), terminated, truncated, info

  def _observe(self):
    noisy = self.task_spec.obs_force_noise or self.task_spec.obs_pose_noise
    noise = self._noise_rng.standard_normal(12) if noisy else np.zeros(12)
    obs = task.observe(self.task_spec, self.wrench, self.data.qpos, self.data.qvel, noise, np)
    return np.nan_to_num(obs).astype(np.float32)

  def render(self):
    if self._renderer is None:
      try:
        self._renderer = mujoco.Renderer(self.mj_model, 240, 320)
      except mujoco.FatalError as e:
        raise RuntimeError(
            "no headless OpenGL context: set MUJOCO_GL=egl (or osmesa) before the first `import mujoco` "
            "(brax imports it too); `import control_brax` first does that") from e
    self._renderer.update_scene(self.data)
    return self._renderer.render()

  def close(self):
    if self._renderer is not None:
      self._renderer.close()
      self._renderer = None


def register_envs() -> list:
  """`PegInHole-<peg>-v0` for every peg file (registered by `import control_brax`; idempotent): the ids."""
  import control_brax  # noqa: PLC0415

  return control_brax.register_gymnasium_envs()
