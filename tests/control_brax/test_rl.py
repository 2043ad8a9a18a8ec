"""RL pieces against independent references: GAE, running stats, PEAD extension, exact resume of the driver."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from control_brax.config import POSE_AXES, base_env_config
from control_brax.envs import PegInHoleEnv
from control_brax.pead import extend_ddpg, extend_policy, extend_sac, group_index
from control_brax.rl import ddpg, networks, ppo, sac
from control_brax.rl.config import base_rl_config
from control_brax.rl.normalize import init_stats, update_stats
from runkit.checkpoint import Checkpointer
from runkit.metrics import read_metrics


def test_gae_matches_naive_loop():
  rng = np.random.default_rng(0)
  t, n, gamma, lam = 7, 3, 0.97, 0.9
  r, v = rng.normal(size=(t, n)), rng.normal(size=(t, n))
  d = (rng.random((t, n)) < 0.3).astype(float)
  last = rng.normal(size=n)
  got = np.asarray(ppo.gae_advantages(jnp.asarray(r), jnp.asarray(v), jnp.asarray(d), jnp.asarray(last), gamma, lam))
  want = np.zeros((t, n))
  for j in range(n):
    adv = 0.0
    for i in reversed(range(t)):
      nv = last[j] if i == t - 1 else v[i + 1, j]
      delta = r[i, j] + gamma * nv * (1 - d[i, j]) - v[i, j]
      adv = delta + gamma * lam * (1 - d[i, j]) * adv
      want[i, j] = adv
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_running_stats_match_numpy():
  rng = np.random.default_rng(1)
  batches = [rng.normal(3.0, 2.0, size=(50, 4)) for _ in range(5)]
  s = init_stats(4)
  for b in batches:
    s = update_stats(s, jnp.asarray(b))
  allx = np.concatenate(batches)
  np.testing.assert_allclose(s.mean, allx.mean(0), rtol=1e-4)
  np.testing.assert_allclose(s.var, allx.var(0), rtol=1e-3)


def _env(groups, **over):
  c = base_env_config()
  c.peg = "l_shape"
  c.action_groups = groups
  c.update(over)
  return PegInHoleEnv(c)


PEAD4 = (("x", "y"), ("z",), ("rx", "ry"), ("rz",))  # x/y tied, tilts tied, z and yaw alone


@pytest.mark.parametrize("old,new", [(PEAD4, ()), ((("x", "y", "z"), ("rx", "ry", "rz")), PEAD4)])
def test_pead_extension_preserves_actions_and_dynamics(old, new):
  """Same observations -> the extended policy's actions drive the env exactly as the grouped policy's did."""
  env_old, env_new = _env(old), _env(new)  # MJX envs are built (not compiled): sizes and configs only
  index, counts = group_index(POSE_AXES, old, new)
  pol = networks.init_policy(jax.random.PRNGKey(0), env_old.observation_size, env_old.action_size, (16, 16))
  pol["mean"][-1]["w"] = jax.random.normal(jax.random.PRNGKey(1), pol["mean"][-1]["w"].shape)  # not near zero
  ext = extend_policy(pol, index)
  obs = jax.random.normal(jax.random.PRNGKey(2), (32, env_old.observation_size))
  a_old, a_new = networks.policy_mean(pol, obs), networks.policy_mean(ext, obs)
  np.testing.assert_array_equal(np.asarray(a_new), np.asarray(a_old[:, jnp.asarray(index)]))
  np.testing.assert_array_equal(np.asarray(ext["log_std"]), np.asarray(pol["log_std"][jnp.asarray(index)]))
  # through the env (C engine: same task code as MJX, no compilation): one step from the same state, same physics
  from control_brax.gym_env import PegInHoleGymEnv

  g_old, g_new = PegInHoleGymEnv(env_old.model.env), PegInHoleGymEnv(env_new.model.env)
  u = np.random.default_rng(0).random(8)
  for g, a in ((g_old, a_old[0]), (g_new, a_new[0])):
    g.reset(options={"u": u})
    for _ in range(5):
      g.step(np.asarray(a))
  np.testing.assert_array_equal(g_new.data.qpos, g_old.data.qpos)
  np.testing.assert_array_equal(g_new.rl, g_old.rl)


def _extension_setup(module, name):
  """PEAD4 -> one output per axis for a replay algorithm: (old algo, new algo, initial state, index, counts,
  observations)."""
  index, counts = group_index(POSE_AXES, PEAD4, ())
  env_old, env_new = _env(PEAD4), _env(())
  cfg = base_rl_config(name)[name]
  cfg.num_envs, cfg.buffer_size = 2, 16
  algo, algo_new = module.make(env_old, cfg), module.make(env_new, cfg)
  ts = jax.jit(algo.init)(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (16, env_old.observation_size))
  return algo, algo_new, ts, index, counts, obs


def test_pead_extension_preserves_ddpg_actor_and_critic():
  algo, algo_new, ts, index, counts, obs = _extension_setup(ddpg, "ddpg")
  params, _ = extend_ddpg(ts.params, ts.opt_state, index, counts, obs.shape[-1])
  stats = ts.obs_stats
  a_old = algo.act(ts.params, stats, obs)
  a_new = algo_new.act(params, stats, obs)
  np.testing.assert_allclose(np.asarray(a_new), np.asarray(a_old[:, jnp.asarray(index)]), atol=1e-6)
  x = jnp.concatenate([obs, a_old], -1)
  x_new = jnp.concatenate([obs, a_new], -1)
  for c_old, c_new in zip(ts.params["critics"], params["critics"]):
    np.testing.assert_allclose(np.asarray(networks.mlp(c_new, x_new, jax.nn.relu)),
                               np.asarray(networks.mlp(c_old, x, jax.nn.relu)), atol=1e-5)


def test_sac_squashed_gaussian_density_is_scipys():
  """log pi(a|s) of the tanh-squashed Gaussian equals scipy's normal log-pdf of atanh(a) minus log(1 - a^2)
  (the change of variables written the naive way, in float64), and the actions stay inside (-1, 1)."""
  from scipy import stats  # noqa: PLC0415

  rng = np.random.default_rng(0)
  out = jnp.asarray(rng.normal(size=(64, 6)) * [1.0, 0.5, 2.0, 1.5, -1.0, 0.3], jnp.float32)
  a, logp = sac.squashed_gaussian(out, jax.random.PRNGKey(3), -5.0, 1.0)
  a, logp, out = (np.asarray(x, np.float64) for x in (a, logp, out))
  mean, raw = out[:, :3], out[:, 3:]
  std = np.exp(-5.0 + 3.0 * (np.tanh(raw) + 1.0))
  u = np.arctanh(np.clip(a, -1 + 1e-12, 1 - 1e-12))
  want = (stats.norm.logpdf(u, mean, std) - np.log(1 - a ** 2)).sum(-1)
  ok = np.abs(a).max(-1) < 0.999  # float32 tanh saturates beyond; atanh of the rounded action is meaningless
  assert ok.sum() > 40 and np.abs(a).max() < 1.0
  np.testing.assert_allclose(logp[ok], want[ok], rtol=2e-3, atol=2e-3)


def test_pead_extension_preserves_sac_actor_and_critics():
  algo, algo_new, ts, index, counts, obs = _extension_setup(sac, "sac")
  params, opt = extend_sac(ts.params, ts.opt_state, index, counts, obs.shape[-1])
  assert jax.tree.structure(opt) == jax.tree.structure(jax.jit(algo_new.init)(jax.random.PRNGKey(0)).opt_state)
  a_old = algo.act(ts.params, ts.obs_stats, obs)
  np.testing.assert_allclose(np.asarray(algo_new.act(params, ts.obs_stats, obs)),
                             np.asarray(a_old[:, jnp.asarray(index)]), atol=1e-6)
  out_old = networks.mlp(ts.params["actor"], obs, jax.nn.relu)
  out_new = networks.mlp(params["actor"], obs, jax.nn.relu)
  n_old, n_new = len(counts), len(index)
  np.testing.assert_allclose(np.asarray(out_new[:, n_new:]), np.asarray(out_old[:, n_old:][:, jnp.asarray(index)]),
                             atol=1e-6)  # each new output's log-std is its group's
  x_old = jnp.concatenate([obs, a_old], -1)
  x_new = jnp.concatenate([obs, a_old[:, jnp.asarray(index)]], -1)
  for c_old, c_new in zip(ts.params["critics"], params["critics"]):
    np.testing.assert_allclose(np.asarray(networks.mlp(c_new, x_new, jax.nn.relu)),
                               np.asarray(networks.mlp(c_old, x_old, jax.nn.relu)), atol=1e-5)


def _tiny(algo="ppo", **train):
  c = base_rl_config(algo)
  c.env.peg = "square"
  c.env.episode_steps = 20
  c.ppo.update(num_envs=8, rollout_len=8, minibatches=2, epochs=2, hidden=(16, 16))
  for section in (c.ddpg, c.sac):
    section.update(num_envs=4, steps_per_iteration=4, updates_per_iteration=4, batch_size=16, buffer_size=512,
                   warmup_steps=32, hidden=(16, 16))
  c.train.update(total_env_steps=256, eval_every_steps=128, eval_envs=8, checkpoint_every_steps=128, num_seeds=2)
  c.train.update(train)
  return c


def _leaves(workdir, cfg):
  from control_brax.evaluate import load_agent

  _, ts = load_agent(cfg, str(workdir))
  return [np.asarray(x) for x in jax.tree.leaves(ts.params)]


@pytest.mark.parametrize("algo", ["ppo", "ddpg", "sac"])
def test_iteration_keeps_the_train_state_types(algo):
  """The init's state has no weak-typed leaf (a state restored from a checkpoint never has) and one iteration
  returns exactly the init's types, so neither the driver's second iteration nor a resumed run compiles the
  iteration program again (each compile of the MJX rollout costs about a minute here)."""
  c = _tiny(algo)
  algo_ = {"ppo": ppo, "ddpg": ddpg, "sac": sac}[algo].make(_env((POSE_AXES,)), c[algo])
  ts0 = jax.eval_shape(algo_.init, jax.random.PRNGKey(0))
  ts1, _ = jax.eval_shape(algo_.iteration, ts0)
  kind = lambda a: (a.shape, a.dtype, a.weak_type)  # noqa: E731
  assert jax.tree.structure(ts0) == jax.tree.structure(ts1)
  bad = [(jax.tree_util.keystr(p), kind(a), kind(b)) for (p, a), b in
         zip(jax.tree_util.tree_leaves_with_path(ts0), jax.tree.leaves(ts1)) if kind(a) != kind(b)]
  assert not bad, bad
  weak = [jax.tree_util.keystr(p) for p, a in jax.tree_util.tree_leaves_with_path(ts0) if a.weak_type]
  assert not weak, weak


@pytest.mark.parametrize("algo,pead", [("ppo", True), ("ddpg", False), ("sac", True)])
def test_driver_resume_is_exact_and_pead_switches(tmp_path, algo, pead):
  """A run interrupted after its first checkpoint and resumed ends with the same weights as an uninterrupted one.

  PPO and SAC resume across a PEAD switch; DDPG without PEAD (its extension is checked above)."""
  from control_brax.train import train

  cfg = _tiny(algo)
  cfg.pead.update(enabled=pead, stages=(PEAD4, ()), switch="steps", switch_steps=(128,))
  stage = 1 if pead else 0
  full = train(cfg, str(tmp_path / "full"), progress=False, log=lambda m: None)
  assert full["env_steps"] == 256 and full["stage"] == stage
  half = ml_collections.ConfigDict(cfg.to_dict())
  half.train.total_env_steps = 128
  train(half, str(tmp_path / "split"), progress=False, log=lambda m: None)
  resumed = train(cfg, str(tmp_path / "split"), progress=False, log=lambda m: None)
  assert resumed["env_steps"] == 256 and resumed["stage"] == stage
  for a, b in zip(_leaves(tmp_path / "full", cfg), _leaves(tmp_path / "split", cfg)):
    np.testing.assert_array_equal(a, b)
  # restored like a fresh state (uncommitted), so resuming reuses the compiled iteration instead of recompiling
  from control_brax.evaluate import load_agent

  assert not any(x.committed for x in jax.tree.leaves(load_agent(cfg, str(tmp_path / "split"))[1]))
  evals = [r for r in read_metrics(str(tmp_path / "split")) if "eval_success_rate" in r]
  assert evals and all(0.0 <= r["eval_success_rate"] <= 1.0 for r in evals)
  assert {"step", "env_steps", "eval_success_rate", "eval_return"} <= set(evals[-1])
  assert any("pead_switch_to_stage" in r for r in read_metrics(str(tmp_path / "full"))) == pead
  json.dumps(full)




TINY_PPO_FLAGS = ["--config.env.peg=square", "--config.env.episode_steps=20", "--config.ppo.num_envs=8",
                  "--config.ppo.rollout_len=8", "--config.ppo.minibatches=2", "--config.ppo.epochs=2",
                  "--config.ppo.hidden=16,16", "--config.train.eval_envs=8", "--config.train.num_seeds=1"]


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_then_resumes(tmp_path):
  """SIGTERM during training: the iteration in progress finishes, a checkpoint of that point is saved and the
  binary exits 128 + 15 (before: the default handler killed it, nothing saved since the last checkpoint, which
  by default comes only every 100k env steps). Re-running resumes from that checkpoint (issue 25 item 8)."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  cmd = [sys.executable, "-m", "control_brax.train", "--config=configs/assembly/ppo_square.py",
         f"--workdir={tmp_path}", "--progress=false", *TINY_PPO_FLAGS]
  proc = subprocess.Popen([*cmd, "--config.train.total_env_steps=1000000"], cwd=repo, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:  # training has started: the first metrics line is out
    if (tmp_path / "metrics.jsonl").exists() and (tmp_path / "metrics.jsonl").read_text().strip():
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert "Traceback" not in err, err
  line = [ln for ln in err.splitlines() if ln.startswith("stopped by signal 15: checkpoint saved at iteration")]
  assert len(line) == 1, err
  it = int(line[0].split("iteration ")[1].split()[0])
  assert it >= 1 and json.loads(out.strip().splitlines()[-1])["signal"] == 15
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3, read_only=True)
  assert ckpt.steps() == [it]
  ckpt.close()
  # resume to exactly the saved point: restores (structure and checksums checked) without compiling an iteration
  done = subprocess.run([*cmd, f"--config.train.total_env_steps={64 * it}"], cwd=repo, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  assert f"resumed from iteration {it} (stage 0, {64 * it} env steps per seed)" in done.stderr, done.stderr
  assert json.loads(done.stdout.strip().splitlines()[-1])["env_steps"] == 64 * it


@pytest.mark.slow
def test_a_non_finite_policy_is_never_saved(tmp_path):
  """NaN parameters (as a diverged update would leave them): the first checkpoint is refused, the run stops with a
  line that says no checkpoint was saved, and the workdir holds no step (issue 25 item 4, the RL trainer)."""
  import dataclasses

  from control_brax.train import train

  poison = lambda runner, ts: dataclasses.replace(ts, params=jax.tree.map(lambda a: a * jnp.nan, ts.params))
  lines = []
  summary = train(_tiny(num_seeds=1), str(tmp_path), log=lines.append, progress=False, init_hook=poison)
  assert summary["status"].startswith("stopped: the parameters or optimiser state are not finite at iteration")
  assert "no checkpoint was saved" in summary["status"] and summary["status"] in lines
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3, read_only=True)
  assert ckpt.steps() == []
  ckpt.close()
