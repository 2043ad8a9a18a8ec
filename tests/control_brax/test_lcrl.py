"""LCRL local-connection policies: exact locality (gradients), config validation, and that PPO/DDPG still learn."""

import json

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from brax.envs.base import State

from confspec import ConfigError
from control_brax.rl import ddpg, networks, ppo
from control_brax.rl.config import base_rl_config, validate_rl

MASK = np.array([[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
                 [0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0],
                 [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0],
                 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
                 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], np.float32)  # last row: sees nothing (bias only)


@pytest.mark.parametrize("activation", [jnp.tanh, jax.nn.relu])
def test_local_network_gradient_is_zero_exactly_outside_the_connection_set(activation):
  layers = networks.init_local_mlp(jax.random.PRNGKey(0), MASK, (16, 16), last_scale=1.0)
  # perturb every weight, including the masked ones, so a mask that only zeroed the initial weights would fail
  layers = jax.tree.map(lambda w: w + 0.3 * jax.random.normal(jax.random.PRNGKey(1), w.shape), layers)
  obs = jax.random.normal(jax.random.PRNGKey(2), (8, 12))
  jac = jax.vmap(jax.jacrev(lambda o: networks.local_mlp(layers, MASK, o, activation)))(obs)  # (8, 6, 12)
  chex.assert_shape(jac, (8, 6, 12))
  jac = np.asarray(jac)
  assert np.all(jac[:, MASK == 0] == 0.0)
  assert np.all(np.abs(jac[:, MASK == 1]).max(axis=0) > 1e-6)  # every connection is live somewhere
  # the same through the Gaussian policy's mean
  pol = networks.init_policy(jax.random.PRNGKey(3), 12, 6, (8,), mask=MASK)
  pol["mean"] = jax.tree.map(lambda w: w + 0.3, pol["mean"])
  jp = np.asarray(jax.jacrev(lambda o: networks.policy_mean(pol, o, MASK))(obs[0]))
  assert np.all(jp[MASK == 0] == 0.0) and np.all(jp[MASK == 1] != 0.0)


def test_full_mask_local_network_equals_per_component_global_networks():
  """With every connection, output i is exactly an ordinary MLP with sub-network i's weights (naive reference)."""
  ones = np.ones((3, 5), np.float32)
  layers = networks.init_local_mlp(jax.random.PRNGKey(0), ones, (7, 4))
  x = jax.random.normal(jax.random.PRNGKey(1), (10, 5))
  got = np.asarray(networks.local_mlp(layers, ones, x))
  for i in range(3):
    sub = [{"w": layer["w"][i], "b": layer["b"][i]} for layer in layers]
    np.testing.assert_allclose(got[:, i], np.asarray(networks.mlp(sub, x))[:, 0], rtol=1e-5, atol=1e-6)


class TrackEnv:
  """Toy batched-simulator env: obs ~ N(0, 1)^4 each step; reward -(a0 - s0)^2 - (a1 + s2)^2; 8-step episodes.

  The optimal action uses s0 for a0 and s2 for a1 only, so a local policy with
  mask [[1,0,0,0],[0,0,1,0]] can be optimal and one with [[0,1,0,0],[0,0,0,1]]
  cannot do better than a = 0 (a known ground truth for the training smoke).
  """

  observation_size, action_size = 4, 2

  def _state(self, key, t, reward=0.0, done=0.0):
    return State(pipeline_state={"key": key, "t": t}, obs=jax.random.normal(key, (4,)), reward=jnp.asarray(reward),
                 done=jnp.asarray(done), metrics={}, info={})

  def reset(self, rng):
    return self._state(rng, jnp.zeros((), jnp.int32))

  def step(self, state, action):
    a = jnp.clip(action, -1.0, 1.0)
    s = state.obs
    reward = -(a[0] - 0.5 * s[0]) ** 2 - (a[1] + 0.5 * s[2]) ** 2
    t = state.pipeline_state["t"] + 1
    key = jax.random.fold_in(state.pipeline_state["key"], t)
    return self._state(key, t, reward, (t >= 8).astype(jnp.float32))


def _write_graph(tmp_path, graph, name="g.json"):
  path = str(tmp_path / name)
  with open(path, "w") as f:
    json.dump({"graph": graph}, f)
  return path


def _train_ppo(path, iterations=40):
  c = base_rl_config("ppo").ppo
  c.update(num_envs=32, rollout_len=16, minibatches=4, learning_rate=3e-3, hidden=(16,), lcrl_graph=path,
           normalize_obs=False, reward_scale=1.0, gamma=0.5)
  algo = ppo.make(TrackEnv(), c)
  ts = algo.init(jax.random.PRNGKey(0))
  init_w0 = ts.params["policy"]["mean"][0]["w"]
  it = jax.jit(algo.iteration)
  rewards = []
  for _ in range(iterations):
    ts, m = it(ts)
    rewards.append(float(m["reward"]))
  return ts, init_w0, rewards, algo


@pytest.mark.slow
def test_ppo_lcrl_learns_with_the_right_graph_and_not_with_the_wrong_one(tmp_path):
  right = _write_graph(tmp_path, [[1, 0, 0, 0], [0, 0, 1, 0]], "right.json")
  wrong = _write_graph(tmp_path, [[0, 1, 0, 0], [0, 0, 0, 1]], "wrong.json")
  ts, w0, r_right, algo = _train_ppo(right)
  _, _, r_wrong, _ = _train_ppo(wrong)
  # a = 0 scores E[-(0.5 s0)^2 - (0.5 s2)^2] = -0.5 per step; the optimum 0 (up to exploration noise)
  assert np.mean(r_right[-5:]) > -0.3 > np.mean(r_right[:3])
  assert np.mean(r_wrong[-5:]) < -0.45
  # masked first-layer weights never move (exactly zero gradient), connected ones do
  w = np.asarray(ts.params["policy"]["mean"][0]["w"])
  mask = np.array([[1, 0, 0, 0], [0, 0, 1, 0]], bool)
  np.testing.assert_array_equal(w[~mask], np.asarray(w0)[~mask])
  assert np.all(np.abs(w[mask] - np.asarray(w0)[mask]).max(-1) > 0)
  act = np.asarray(jax.jacrev(lambda o: algo.act(ts.params, ts.obs_stats, o))(jnp.ones(4)))
  assert np.all(act[~mask] == 0.0) and np.all(act[mask] != 0.0)


@pytest.mark.slow
def test_ddpg_lcrl_actor_is_local_and_learns(tmp_path):
  path = _write_graph(tmp_path, [[1, 0, 0, 0], [0, 0, 1, 0]])
  c = base_rl_config("ddpg").ddpg
  c.update(num_envs=16, steps_per_iteration=4, updates_per_iteration=16, batch_size=64, buffer_size=4096,
           warmup_steps=256, hidden=(32, 32), lcrl_graph=path, normalize_obs=False, reward_scale=1.0, gamma=0.5,
           actor_lr=1e-3, critic_lr=1e-3)
  algo = ddpg.make(TrackEnv(), c)
  ts = algo.init(jax.random.PRNGKey(0))
  it = jax.jit(algo.iteration)
  obs = jax.random.normal(jax.random.PRNGKey(9), (256, 4))

  def score(params):  # mean reward of the deterministic actor on fresh observations
    a = algo.act(params, ts.obs_stats, obs)
    return float(jnp.mean(-(a[:, 0] - 0.5 * obs[:, 0]) ** 2 - (a[:, 1] + 0.5 * obs[:, 2]) ** 2))

  before = score(ts.params)
  for _ in range(120):
    ts, _ = it(ts)
  assert score(ts.params) > max(before, -0.5) + 0.2  # better than its start and than a = 0
  jac = np.asarray(jax.jacrev(lambda o: algo.act(ts.params, ts.obs_stats, o))(jnp.ones(4)))
  mask = np.array([[1, 0, 0, 0], [0, 0, 1, 0]], bool)
  assert np.all(jac[~mask] == 0.0) and np.all(jac[mask] != 0.0)


def test_config_rejects_a_graph_of_the_wrong_shape_naming_the_field(tmp_path):
  c = base_rl_config("ppo")
  c.ppo.lcrl_graph = _write_graph(tmp_path, np.ones((6, 12)).tolist())
  validate_rl(ml_collections.ConfigDict(c.to_dict()))  # 6 actions x 12 observations: fits
  c.env.obs_velocities = True  # 18 observations now
  with pytest.raises(ConfigError, match=r"ppo\.lcrl_graph.*\(6, 12\).*\(6, 18\)"):
    validate_rl(c)
  c.env.obs_velocities = False
  c.ppo.lcrl_graph = str(tmp_path / "missing.json")
  with pytest.raises(ConfigError, match=r"ppo\.lcrl_graph.*does not exist"):
    validate_rl(c)
  d = base_rl_config("ddpg")
  d.ddpg.lcrl_graph = _write_graph(tmp_path, np.ones((6, 12)).tolist())
  d.env.action_groups = (("x", "y"), ("z",), ("rx", "ry"), ("rz",))  # 4 action components
  with pytest.raises(ConfigError, match=r"ddpg\.lcrl_graph.*\(4, 12\)"):
    validate_rl(d)


