"""The C-engine backend (`env.backend = "mujoco"`): against MuJoCo's own `mj_step`, batch and thread invariance,
exact resume, one-line errors."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from confspec import ConfigError
from control_brax import task
from control_brax.cengine import CEngine, readout
from control_brax.config import base_env_config
from control_brax.envs import Model, PegInHoleEnv, resolve_backend
from control_brax.gym_env import PegInHoleGymEnv

PEGS = ["square", "round", "l_shape", "t_shape", "u_uneven"]


def _cfg(peg="l_shape", **over):
  c = base_env_config()
  c.peg, c.backend = peg, "mujoco"
  c.update(over)
  return c


def test_readout_is_mujocos_qfrc_constraint_and_contact_depths():
  """The sensor-derived wrench equals `qfrc_constraint` of the same `mj_step` to 1e-12 (relative), and the
  per-pair depths equal the deepest entries of MuJoCo's contact list, on random contact-rich states."""
  model = Model(_cfg("l_shape", error_scale=2.0))
  eng = CEngine(model, threads=1)
  data = mujoco.MjData(eng.base)
  rng = np.random.default_rng(0)
  floor = model.floor_id
  checked = 0
  for _ in range(400):
    mujoco.mj_resetData(eng.base, data)
    data.qpos[:] = rng.uniform(-1, 1, 6) * [0.004, 0.004, 0.012, 0.1, 0.1, 0.3] - [0, 0, 0.008, 0, 0, 0]
    data.qvel[:] = rng.normal(size=6) * 0.01
    data.ctrl[:] = data.qpos + rng.normal(size=6) * 0.002
    q_pre = data.qpos.copy()
    mujoco.mj_step(eng.base, data)
    if data.ncon == 0:
      continue
    checked += 1
    wrench, wall, floor_pen = readout(data.sensordata[None].copy(), q_pre[None], eng.pair_on_floor, np)
    ref = data.qfrc_constraint
    np.testing.assert_allclose(wrench, ref, rtol=0, atol=1e-12 * (1 + np.abs(ref).max()))
    n, con = data.ncon, data.contact
    is_floor = (con.geom1[:n] == floor) | (con.geom2[:n] == floor)
    depth = np.maximum(-con.dist[:n], 0.0)
    assert wall == pytest.approx(depth[~is_floor].max(initial=0.0), abs=1e-15)
    assert floor_pen == pytest.approx(depth[is_floor].max(initial=0.0), abs=1e-15)
  eng.close()
  assert checked > 200


def _paired(peg, steps=80, seed=0):
  """The backend's env and the gymnasium adapter (mj_step, qfrc_constraint read directly) from one float32
  episode under the same random actions: the largest differences in obs, reward, penetration."""
  cfg = _cfg(peg, error_scale=1.5)
  env, genv = PegInHoleEnv(cfg), PegInHoleGymEnv(cfg)
  u = np.random.default_rng(seed).random(8).astype(np.float32)
  start, friction, shrink = task.sample_episode(env.spec, jnp.asarray(u), jnp)
  s = jax.jit(env.reset_to)(start, friction, shrink, jax.random.PRNGKey(0))
  genv.reset(options={"u": u.astype(np.float64)})
  genv.start = np.asarray(start, np.float64)  # the same float32-rounded episode on both sides
  genv.data.qpos[:] = genv.data.ctrl[:] = genv.start
  genv.set_physics(float(friction), float(shrink))
  mujoco.mj_forward(genv.mj_model, genv.data)
  step = jax.jit(env.step)
  rng = np.random.default_rng(seed + 1)
  worst = dict(obs=0.0, reward=0.0, penetration=0.0, steps=0, force=0.0)
  for _ in range(steps):
    a = rng.uniform(-1, 1, env.action_size).astype(np.float32)
    s = step(s, jnp.asarray(a))
    obs, reward, term, trunc, info = genv.step(a)
    worst["obs"] = max(worst["obs"], float(np.abs(np.asarray(s.obs) - obs).max()))
    worst["reward"] = max(worst["reward"], abs(float(s.reward) - reward))
    worst["penetration"] = max(worst["penetration"], abs(float(s.metrics["penetration"]) - info["penetration"]))
    worst["force"] = max(worst["force"], info["force"])
    worst["steps"] += 1
    assert bool(s.done) == (term or trunc)
    if term or trunc:
      break
  return worst


@pytest.mark.parametrize("peg", PEGS)
def test_backend_equals_mj_step_episodes(peg):
  w = _paired(peg)
  print(f"{peg}: {w}")
  assert w["force"] > 1.0  # contact happened
  assert w["obs"] < 1e-4 and w["reward"] < 1e-4 and w["penetration"] < 1e-7


def _one_world(env, k, steps):
  """Reset from key k and `steps` random actions; the final state."""
  k0, k1 = jax.random.split(k)
  s = env.reset(k0)

  def body(s, kk):
    return env.step(s, jax.random.uniform(kk, (env.action_size,), minval=-1, maxval=1)), None

  return jax.lax.scan(body, s, jax.random.split(k1, steps))[0]


def test_batch_threads_and_resume_do_not_change_a_world():
  """A world's trajectory is the same alone, in a nested (seeds x worlds) batch, on 1 or 2 threads, and when
  its state leaves the program (checkpoint) and comes back mid-episode: bit for bit."""
  env2, env1 = PegInHoleEnv(_cfg("square", threads=2)), PegInHoleEnv(_cfg("square", threads=1))
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  batched = jax.jit(jax.vmap(jax.vmap(lambda k: _one_world(env2, k, 30))))(keys.reshape(2, 3, 2))
  alone = jax.jit(lambda k: _one_world(env1, k, 30))(keys[4])
  words = np.asarray(batched.pipeline_state.data.words)
  np.testing.assert_array_equal(words[1, 1], np.asarray(alone.pipeline_state.data.words))
  np.testing.assert_array_equal(np.asarray(batched.obs)[1, 1], np.asarray(alone.obs))
  assert len({w.tobytes() for w in words.reshape(6, -1)}) == 6  # the worlds differ from each other
  # resume: 15 steps, the state through numpy (what a checkpoint keeps), 15 more == 30 straight
  k0, k1 = jax.random.split(keys[4])
  ks = jax.random.split(k1, 30)
  step = jax.jit(env2.step)
  act = lambda kk: jax.random.uniform(kk, (env2.action_size,), minval=-1, maxval=1)  # noqa: E731
  s = jax.jit(env2.reset)(k0)
  for kk in ks[:15]:
    s = step(s, act(kk))
  s = jax.tree.map(lambda x: jnp.asarray(np.array(x)), s)
  for kk in ks[15:]:
    s = step(s, act(kk))
  np.testing.assert_array_equal(np.asarray(s.pipeline_state.data.words), words[1, 1])
  np.testing.assert_array_equal(np.asarray(s.obs), np.asarray(alone.obs))


def test_backend_choice_and_errors_are_one_line():
  assert resolve_backend("auto") == ("mujoco" if jax.default_backend() == "cpu" else "mjx")
  assert PegInHoleEnv(_cfg("square")).backend == "mujoco"
  with pytest.raises(ConfigError, match=r"^env\.backend: .*bullet.*") as e:
    PegInHoleEnv(_cfg("square", backend="bullet"))
  assert "\n" not in str(e.value)
  model = Model(_cfg("square"))
  model.xml = model.xml.replace('type="box"', 'type="boxx"', 1)  # a geometry MuJoCo's compiler rejects
  with pytest.raises(ConfigError, match=r"^env\.peg: MuJoCo's C engine rejects the geometry") as e:
    CEngine(model)
  assert "\n" not in str(e.value)


def test_a_mujoco_without_rollout_is_one_line():
  """The C-engine backend on a MuJoCo without `mujoco.rollout` (blocked here): one line naming env.backend."""
  import subprocess  # noqa: PLC0415
  import sys  # noqa: PLC0415

  code = ("import sys; sys.modules['mujoco.rollout'] = None\n"
          "from control_brax.config import base_env_config\nfrom control_brax.envs import PegInHoleEnv\n"
          "c = base_env_config(); c.backend = 'mujoco'\n"
          "try:\n  PegInHoleEnv(c)\nexcept Exception as e:\n  print(type(e).__name__, '|', e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout.strip()
  last = out.splitlines()[-1]
  assert last.startswith("ConfigError | env.backend: 'mujoco' needs mujoco.rollout"), out
