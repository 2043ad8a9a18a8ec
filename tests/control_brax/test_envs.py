"""The assembly env on both engines: stability, penetration, agreement, Brax and gymnasium compatibility.

`PegInHoleEnv` runs on either backend (`env.backend`: MJX, or MuJoCo's C engine through mujoco.rollout; "auto" is
the C engine on this CPU); the agreement tests run each backend against the gymnasium adapter's plain `mj_step`
loop.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.wrappers import training as brax_wrappers
from conftest import REPO

from control_brax import task
from control_brax.config import base_env_config, load_peg
from control_brax.envs import PegInHoleEnv
from control_brax.gym_env import PegInHoleGymEnv
from control_brax.scripted import gains, run_episodes, summarize

PEGS = ["square", "round", "rect", "l_shape", "t_shape"]


def _cfg(peg="l_shape", **over):
  c = base_env_config()
  c.peg = peg
  c.update(over)
  return c


@pytest.mark.parametrize("peg,backend", [(p, "mujoco") for p in PEGS] + [("l_shape", "mjx")])
def test_random_actions_stay_finite_and_penetration_below_clearance(peg, backend):
  """>= 10k random-action steps in a batch through Brax's training wrappers (vmap, episode, auto-reset)."""
  env = PegInHoleEnv(_cfg(peg, backend=backend))
  wrapped = brax_wrappers.wrap(env, episode_length=env.spec.episode_steps)
  batch, steps = 64, 160
  state = jax.jit(wrapped.reset)(jax.random.split(jax.random.PRNGKey(0), batch))

  @jax.jit
  def run(state, key):
    def body(s, k):
      s = wrapped.step(s, jax.random.uniform(k, (batch, env.action_size), minval=-1, maxval=1))
      qpos = s.pipeline_state.data.qpos
      return s, (jnp.all(jnp.isfinite(qpos)) & jnp.all(jnp.isfinite(s.obs)), s.metrics["penetration"].max(),
                 s.done.sum(), s.metrics["success"].sum(), s.metrics["floor_penetration"].max())

    return jax.lax.scan(body, state, jax.random.split(key, steps))[1]

  finite, pen, dones, successes, floor_pen = map(np.asarray, run(state, jax.random.PRNGKey(1)))
  assert batch * steps >= 10_000
  assert finite.all()
  assert dones.sum() > batch  # episodes ended and auto-reset
  clearance = load_peg(peg).clearance
  print(f"{peg}: max penetration into the walls {pen.max() * 1e3:.3f} mm (clearance {clearance * 1e3:.2f} mm), "
        f"into the floor {floor_pen.max() * 1e3:.3f} mm, "
        f"{int(dones.sum())} episodes ended, {int(successes.sum())} inserted")
  assert pen.max() < clearance


def _mjx_rollouts(env, u, actions):
  """Episodes from uniforms u (B, 8) under actions (B, T, A): qpos (B, T, 6), done, success, force per step."""

  def one(u_i, a_i):
    start, friction, shrink = task.sample_episode(env.spec, u_i, jnp)
    s = env.reset_to(start, friction, shrink, jax.random.PRNGKey(0))

    def body(s, a):
      s = env.step(s, a)
      return s, (s.pipeline_state.data.qpos, s.done, s.metrics["success"], s.metrics["force"])

    return jax.lax.scan(body, s, a_i)[1]

  return [np.asarray(x) for x in jax.jit(jax.vmap(one))(jnp.asarray(u), jnp.asarray(actions))]


def _c_rollout(gym_env, u, actions):
  gym_env.reset(options={"u": u})
  qpos, success, forces = [], False, []
  for a in actions:
    _, _, term, trunc, info = gym_env.step(a)
    qpos.append(gym_env.data.qpos.copy())
    forces.append(info["force"])
    success = info["success"]
    if term or trunc:
      break
  return np.asarray(qpos), success, np.asarray(forces)


@pytest.mark.parametrize("backend,tol", [("mjx", 1e-4), ("mujoco", 1e-6)])
def test_mjx_matches_c_engine_in_free_space(backend, tol):
  """20 initial states, 100 steps of random actions high above the hole: positions within 1e-4 m on MJX, 1e-6 m
  on the C-engine backend (the same engine; float32 commands)."""
  cfg = _cfg("l_shape", start_height=0.05, backend=backend)
  menv, genv = PegInHoleEnv(cfg), PegInHoleGymEnv(cfg)
  rng = np.random.default_rng(0)
  u = rng.random((20, 8))
  actions = rng.uniform(-1, 1, (20, 100, menv.action_size)).astype(np.float32)
  q_mjx, _, _, f_mjx = _mjx_rollouts(menv, u, actions)
  worst = 0.0
  for i in range(20):
    q_c, _, f_c = _c_rollout(genv, u[i], actions[i])
    assert len(q_c) == 100 and np.all(f_c == 0) and np.all(f_mjx[i] == 0)  # really free space
    worst = max(worst, np.abs(q_c[:, :3] - q_mjx[i, :, :3]).max())
  print(f"free space ({backend}): max position difference {worst:.2e} m over 20 x 100 steps")
  assert worst < tol


@pytest.mark.parametrize("backend,min_agree", [("mjx", 18), ("mujoco", 20)])
def test_mjx_and_c_engine_agree_on_contact_outcomes(backend, min_agree):
  """20 contact-rich scripted episodes on l_shape: inserted-or-jammed agrees in >= 18 on MJX, all 20 on the C-engine
  backend, and both outcomes occur."""
  cfg = _cfg("l_shape", error_scale=0.5, backend=backend)
  menv, genv = PegInHoleEnv(cfg), PegInHoleGymEnv(cfg)
  u = np.random.default_rng(1).random((20, 8))
  actions = np.zeros((20, menv.spec.episode_steps, menv.action_size), np.float32)
  _, done, success, force = _mjx_rollouts(menv, u, actions)
  mjx_out = [bool(success[i][: np.argmax(done[i] > 0) + 1].max()) for i in range(20)]
  c_out = [_c_rollout(genv, u[i], actions[i])[1] for i in range(20)]
  agree = sum(a == b for a, b in zip(mjx_out, c_out))
  print(f"outcomes agree in {agree}/20; {backend} inserted {sum(mjx_out)}, C inserted {sum(c_out)}")
  assert force.max() > 1.0  # contact happened
  assert agree >= min_agree
  assert 0 < sum(c_out) < 20


@pytest.mark.parametrize("peg", PEGS)
def test_scripted_controller_inserts_without_initial_error(peg):
  res = summarize(run_episodes(_cfg(peg, error_scale=0.0, randomize_physics=False), episodes=2, seed=0))
  assert res["success_rate"] == 1.0


def test_mjx_scripted_controller_inserts_square_without_initial_error():
  env = PegInHoleEnv(_cfg("square", error_scale=0.0, backend="mjx"))
  u = np.full((1, 8), 0.5)
  _, done, success, _ = _mjx_rollouts(env, u, np.zeros((1, env.spec.episode_steps, 6), np.float32))
  assert success[0].max() == 1.0


def test_tuned_scripted_controller_leaves_l_shape_gap():
  """The tuned gains (committed grid search) succeed in <= 50% of 200 l_shape evaluation episodes."""
  with open(os.path.join(REPO, "results", "scripted", "l_shape.json")) as f:
    best = json.load(f)["best_gains"]
  res = summarize(run_episodes(gains(_cfg("l_shape"), **best), episodes=200, seed=7))
  print(f"tuned scripted on l_shape: {res}")
  assert res["episodes"] == 200
  assert 0.0 < res["success_rate"] <= 0.5


def test_gymnasium_env_checker_passes():
  """gymnasium's own checker, with warnings as errors and its render check, on an env made by its registered id;
  every peg file has an id; a peg given by name works (it raised AttributeError: 'str' ... 'eval')."""
  import warnings  # noqa: PLC0415

  import gymnasium  # noqa: PLC0415
  from gymnasium.utils.env_checker import check_env  # noqa: PLC0415

  import control_brax  # noqa: PLC0415

  ids = control_brax.register_gymnasium_envs()
  pegs = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "configs", "assembly", "pegs")) if f.endswith(".py"))
  assert ids == [f"PegInHole-{p}-v0" for p in pegs] and "PegInHole-l_shape-v0" in ids
  env = gymnasium.make("PegInHole-l_shape-v0", render_mode="rgb_array")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    check_env(env.unwrapped)
  assert env.unwrapped.model.env.peg == "l_shape"
  assert np.all(np.isfinite(env.observation_space.low)) and np.all(np.isfinite(env.observation_space.high))
  env.close()
  by_name = PegInHoleGymEnv(peg="l_shape")
  assert by_name.model.env.peg == "l_shape" and by_name.observation_space.shape == env.observation_space.shape
  with pytest.raises(ValueError, match="render_mode"):
    PegInHoleGymEnv(peg="l_shape", render_mode="human")


def test_episode_render_strip_and_plot(tmp_path):
  from control_brax.render import save_force_depth, save_strip, trace_episode

  trace = trace_episode(_cfg("square", error_scale=0.0), seed=0, frames=3)
  assert trace["success"] and len(trace["frames"]) == 3
  assert trace["frames"][0].shape == (240, 320, 3) and trace["frames"][0].std() > 5  # not a blank image
  for fn, name in ((save_strip, "strip.png"), (save_force_depth, "fd.png")):
    path = fn(trace, str(tmp_path / name))
    assert os.path.getsize(path) > 5000
  # the MP4, read back through ffmpeg: H.264, every control step a frame at the requested rate
  import imageio_ffmpeg  # noqa: PLC0415

  from control_brax.render import save_video  # noqa: PLC0415

  frames = [trace["frames"][i % 3] for i in range(10)]
  reader = imageio_ffmpeg.read_frames(save_video(frames, str(tmp_path / "ep.mp4"), fps=20.0))
  meta = next(reader)
  assert meta["codec"] == "h264" and meta["size"] == (320, 240) and meta["fps"] == 20.0
  decoded = [np.frombuffer(f, np.uint8).reshape(240, 320, 3) for f in reader]
  assert len(decoded) == 10
  assert np.abs(decoded[1].astype(float) - frames[1]).mean() < 8  # lossy, but the same picture


@pytest.mark.slow
def test_brax_ppo_trainer_runs_on_the_env():
  """Brax's own PPO trainer accepts the env unchanged (a few iterations; learning is the RL issue's job)."""
  from brax.training.agents.ppo import train as brax_ppo

  env = PegInHoleEnv(_cfg("square"))
  _, params, metrics = brax_ppo.train(
      environment=env, num_timesteps=2048, episode_length=40, num_envs=16, batch_size=16, num_minibatches=2,
      unroll_length=8, num_updates_per_batch=1, num_evals=2, num_eval_envs=4, seed=0)
  assert np.isfinite(metrics["eval/episode_reward"])
