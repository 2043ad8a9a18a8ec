"""ETCL (equivalence law), WDPD (weighted distillation) and the transfer driver.

Expected values come from closed forms worked by hand from the peg files (section
areas, rim lengths, lever arms), from a naive float64 loop, or from invariants of
the law (identity, inverse, composition, natural frequency and damping ratio).
"""

from __future__ import annotations

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from control_brax import etcl, wdpd
from control_brax.config import base_env_config, load_peg
from control_brax.rl import networks as nets
from experiments import etcl_acceptance
from runkit.stats import paired_binary_change_ci


@pytest.fixture(scope="module")
def feats():
  return {p: etcl.features(load_peg(p)) for p in ("square", "rect", "l_shape")}


def test_features_closed_form(feats):
  sq, rect, l_shape = feats["square"], feats["rect"], feats["l_shape"]
  # square 20 x 20 mm about its centre
  assert sq.area == pytest.approx(4e-4, rel=1e-3)
  assert (sq.rim_x, sq.rim_y) == pytest.approx((0.04, 0.04), rel=1e-3)
  assert (sq.lever_rx, sq.lever_ry, sq.lever_rz) == pytest.approx((0.01, 0.01, 0.005), rel=1e-3)
  # rect 30 x 14 mm: +-x edges (x = +-15, 14 mm long), +-y edges (y = +-7, 30 mm long)
  assert (rect.rim_x, rect.rim_y) == pytest.approx((0.028, 0.060), rel=1e-3)
  assert (rect.lever_rx, rect.lever_ry) == pytest.approx((0.007, 0.015), rel=1e-3)
  assert rect.lever_rz == pytest.approx((0.028 * 0.0035 + 0.060 * 0.0075) / 0.088, rel=1e-3)
  # L: arms [-6, 24] x [-6, 6] and [-6, 6] x [-6, 24] mm; +-x edges at x = 24 (12 mm), 6 (18 mm), -6 (30 mm)
  assert l_shape.area == pytest.approx(576e-6, rel=1e-3)
  assert l_shape.lever_ry == pytest.approx((0.024 * 0.012 + 0.006 * 0.018 + 0.006 * 0.030) / 0.060, rel=1e-3)
  assert l_shape.lever_rx == pytest.approx(l_shape.lever_ry, rel=1e-6)  # symmetric about the diagonal
  assert l_shape.clearance == pytest.approx(0.0005 + 0.00015)


def _gains():
  env = base_env_config()
  return etcl.Gains.from_env(env)


@pytest.mark.parametrize("law", etcl.LAWS)
def test_law_invariants(feats, law):
  g = _gains()
  sq, rect, l_shape = feats["square"], feats["rect"], feats["l_shape"]
  same = etcl.reconfigure(g, sq, sq, law)
  np.testing.assert_allclose(same.k, g.k)
  np.testing.assert_allclose(same.desired, g.desired)
  b = etcl.reconfigure(g, sq, l_shape, law)
  # natural frequency and damping ratio are kept on every axis
  np.testing.assert_allclose(b.natural_frequency(), g.natural_frequency(), rtol=1e-9)
  np.testing.assert_allclose(b.damping_ratio(), g.damping_ratio(), rtol=1e-9)
  f_a, f_b = g.desired[2], b.desired[2]
  for ax in (0, 1):
    if law == "wrench":  # lateral deflection per measured force, relative to clearance, is kept: 1 / (K c)
      assert 1 / (b.k[ax] * l_shape.clearance) == pytest.approx(1 / (g.k[ax] * sq.clearance))
    else:  # set-point deflection relative to clearance: F / (K c)
      assert f_b / (b.k[ax] * l_shape.clearance) == pytest.approx(f_a / (g.k[ax] * sq.clearance))
  if law == "wrench":
    assert b.k[2] == pytest.approx(g.k[2])
  assert f_b / f_a == pytest.approx(l_shape.rim_length / sq.rim_length)
  if law == "angle":  # tilt per set-point force at the rim lever arm is kept
    assert f_b * l_shape.lever_rz / b.k[5] == pytest.approx(f_a * sq.lever_rz / g.k[5])
  else:
    np.testing.assert_allclose(b.k[3:], g.k[3:])
  # inverse and composition
  back = etcl.reconfigure(b, l_shape, sq, law)
  np.testing.assert_allclose(back.k, g.k, rtol=1e-9)
  via = etcl.reconfigure(etcl.reconfigure(g, sq, rect, law), rect, l_shape, law)
  np.testing.assert_allclose(via.k, b.k, rtol=1e-9)
  np.testing.assert_allclose(via.d, b.d, rtol=1e-9)


def test_etcl_scripted_smoke():
  """The reconfigured gains run on the scripted controller (C engine), paired with the unreconfigured ones."""
  from control_brax import scripted  # noqa: PLC0415

  env = scripted.gains(base_env_config(), 1000.0, 0.7, 1.0, 10.0)
  env.peg = "l_shape"
  env_b = etcl.reconfigure_env(env, load_peg("square"), load_peg("l_shape"))
  assert env_b.desired_force[2] > env.desired_force[2]
  for e in (env, env_b):
    res = scripted.summarize(scripted.run_episodes(e, 2, seed=5))
    assert res["episodes"] == 2 and 0 <= res["success_rate"] <= 1 and math.isfinite(res["peak_force_n"])


def test_committed_etcl_report():
  """The committed acceptance report covers >= 200 paired episodes per target and says whether each passes."""
  path = os.path.join(os.path.dirname(__file__), "..", "..", "results", "etcl", "acceptance.json")
  assert os.path.exists(path), "results/etcl/acceptance.json is committed (experiments.etcl_acceptance)"
  with open(path) as f:
    rep = json.load(f)
  assert rep["episodes"] >= 200
  for r in rep["results"].values():
    assert r["passes"] == etcl_acceptance.passes(r)
    assert r["unreconfigured"]["episodes"] == r["etcl"]["episodes"] == rep["episodes"]
  # the default law is the one the decisive run checked, on both targets and both source gain sets
  assert {f"{etcl.DEFAULT_LAW}/{s}/{t}" for s in ("published", "retuned") for t in ("l_shape", "rect")} <= set(
      rep["results"])


def test_success_change_interval_matches_per_episode_differences():
  """The interval from discordant counts equals the normal interval of the per-episode +1 / -1 / 0 differences."""
  won, lost, n = 75, 19, 4000
  d = np.concatenate([np.ones(won), -np.ones(lost), np.zeros(n - won - lost)])
  half = 1.96 * d.std() / np.sqrt(n)
  np.testing.assert_allclose(paired_binary_change_ci(won, lost, n), [d.mean() - half, d.mean() + half], rtol=1e-12)


def test_wdpd_weights_rule(feats):
  sq, rect = feats["square"], feats["rect"]
  w = wdpd.weights(sq, rect)
  f = 0.088 / 0.080  # rim length ratio, same clearance
  s = np.array([f, f, f, 1, 1, 1])  # torque law: rotational gains unchanged
  np.testing.assert_allclose(w, np.minimum(s, 1 / s), rtol=1e-3)
  np.testing.assert_allclose(wdpd.weights(sq, sq), np.ones(6))
  np.testing.assert_allclose(wdpd.weights(sq, rect, ("x", "rz")), w[[0, 5]])
  # symmetric in A and B: the rule distrusts change in either direction equally
  np.testing.assert_allclose(wdpd.weights(rect, sq), w, rtol=1e-9)


def test_transfer_rejects_unknown_etcl_law(tmp_path):
  from experiments import transfer  # noqa: PLC0415

  c = transfer.default_config()
  c.transfer.etcl_law = "stiffer"
  with pytest.raises(ValueError, match="config.transfer.etcl_law"):
    transfer.run("square", "l_shape", str(tmp_path), c, progress=False, log=lambda m: None)


def test_wdpd_loss_matches_naive_loop():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(7, 6)), rng.normal(size=(7, 6))
  w = rng.uniform(size=6)
  total = 0.0
  for i in range(7):
    for d in range(6):
      total += w[d] * (s[i, d] - t[i, d]) ** 2 + (1 - w[d]) * s[i, d] ** 2
  naive = total / 7 / 6
  got = wdpd.loss(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32))
  chex.assert_shape(got, ())
  assert float(got) == pytest.approx(naive, rel=1e-5)


def test_distill_reaches_closed_form_minimum():
  """The fitted student's loss approaches the closed-form minimum sum_d w_d (1 - w_d) mu_t,d^2 / n_dims."""
  k_t, k_obs, k_d = jax.random.split(jax.random.PRNGKey(0), 3)
  teacher = nets.init_policy(k_t, 5, 3, (16,), -0.5)
  teacher["mean"][-1]["w"] = teacher["mean"][-1]["w"] * 100  # non-trivial teacher actions
  obs = jax.random.normal(k_obs, (256, 5))
  w = jnp.asarray([1.0, 0.5, 0.0])
  student, final = wdpd.distill(k_d, teacher, obs, w, (32,), -0.5, steps=600, batch=128, lr=3e-3)
  mu_t = nets.policy_mean(teacher, obs)
  floor = float(jnp.mean(jnp.sum(w * (1 - w) * mu_t ** 2, -1)) / 3)
  start = float(wdpd.loss(jnp.zeros_like(mu_t), mu_t, w))
  assert floor <= float(final) + 1e-6
  assert float(final) - floor < 0.05 * (start - floor)
  chex.assert_shape(student["log_std"], (3,))
  np.testing.assert_allclose(student["log_std"], w * teacher["log_std"] + (1 - w) * -0.5, rtol=1e-6)


def test_median_ci_censoring():
  from runkit.stats import median_ci  # noqa: PLC0415

  r = median_ci([1.0, 2.0, 3.0])
  assert r["median"] == 2.0 and 1.0 <= r["ci95"][0] <= 2.0 <= r["ci95"][1] <= 3.0
  r = median_ci([1.0, None, None])
  assert r["median"] is None and r["ci95"][1] is None and r["reached"] == 1
  r = median_ci([1.0, 2.0, None])
  assert r["median"] == 2.0 and r["ci95"][1] is None


@pytest.mark.slow
def test_transfer_new_geometry_file(tmp_path):
  """A geometry given only as a parameter file (a rect variant written here) runs through the transfer driver."""
  from experiments import transfer  # noqa: PLC0415

  peg = tmp_path / "rect_wide.py"
  peg.write_text("from control_brax.geometry import base_peg\n\n\ndef get_config():\n  c = base_peg()\n"
                 "  c.name = 'rect_wide'\n  c.rects = ((0.0, 0.0, 0.016, 0.008),)\n  c.clearance = 0.0006\n"
                 "  return c\n")
  c = transfer.default_config()
  c.ppo.num_envs, c.ppo.rollout_len, c.ppo.minibatches = 8, 4, 2
  c.train.eval_envs, c.train.eval_every_steps, c.train.checkpoint_every_steps = 4, 32, 64
  c.env.episode_steps = 20
  c.transfer.seeds, c.transfer.budget_steps, c.transfer.teacher_steps = 2, 64, 32
  c.transfer.distill_rollout_len, c.transfer.distill_steps = 2, 5
  # Only the method that uses every piece (teacher, ETCL gains and WDPD weights from the file's features,
  # distillation): each method is one more compiled RL program, and the suite has a time budget.
  res = transfer.run("square", str(peg), str(tmp_path / "out"), c, progress=False, log=lambda m: None,
                     methods=("etcl_wdpd",))
  js = transfer.contract_json(res)
  assert js["target"] == "rect_wide"
  m = "etcl_wdpd"
  for k in ("steps_to_80", "wall_s_to_80"):
    assert set(js[m][k]) == {"median", "ci95"} and len(js[m][k]["ci95"]) == 2
  assert 0 <= js[m]["final_success_rate"] <= 1
  assert len(res["results"][m]["seeds"]["final_success_rate"]) == 2
  assert all(js[o] is None for o in transfer.METHODS if o != m)
  assert set(res["meta"]["unfinished"]) == set(transfer.METHODS) - {m}
  assert os.path.exists(tmp_path / "out" / "report.md")
  with open(tmp_path / "out" / "runs" / "etcl_wdpd" / "distill.json") as f:
    d = json.load(f)
  np.testing.assert_allclose(d["weights"], wdpd.weights(etcl.features(load_peg("square")),
                                                        etcl.features(load_peg(str(peg)))), rtol=1e-6)
