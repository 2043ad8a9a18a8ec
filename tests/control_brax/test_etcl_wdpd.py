"""ETCL (equivalence law) and WDPD (weighted distillation).

Expected values come from closed forms worked by hand from the peg files (section
areas, rim lengths, lever arms), from a naive float64 loop, or from invariants of
the law (identity, inverse, composition, natural frequency and damping ratio).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from control_brax import etcl, wdpd
from control_brax.config import base_env_config, load_peg
from control_brax.rl import networks as nets


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


