"""Geometry, controller and task semantics, checked against independent references (no MJX compilation)."""

import math

import ml_collections
import numpy as np
import pytest

from confspec import ConfigError
from control_brax import geometry, task
from control_brax.config import base_env_config, load_peg, parse_groups, validate_env

PRISMS = ["square", "rect", "l_shape", "t_shape"]


def _in_any(x, y, rects):
  return np.any([(np.abs(x - cx) < hx) & (np.abs(y - cy) < hy) for cx, cy, hx, hy in rects], axis=0)


@pytest.mark.parametrize("name", PRISMS)
def test_plate_is_exactly_the_complement_of_the_cavity(name):
  """Every point of the plate's square is in exactly one of: the cavity, one wall box."""
  peg = load_peg(name)
  cavity = geometry.dilate(peg.rects, peg.clearance)
  boxes = geometry.plate_boxes(cavity, peg.wall_margin)
  lo = min(min(cx - hx, cy - hy) for cx, cy, hx, hy in cavity) - peg.wall_margin
  hi = max(max(cx + hx, cy + hy) for cx, cy, hx, hy in cavity) + peg.wall_margin
  g = np.linspace(lo, hi, 401)[1:-1] + 1.3e-6  # off the edges
  x, y = np.meshgrid(g, g)
  in_cavity = _in_any(x, y, cavity)
  counts = np.sum([(np.abs(x - cx) < hx) & (np.abs(y - cy) < hy) for cx, cy, hx, hy in boxes], axis=0)
  assert np.all(counts[in_cavity] == 0)
  assert np.all(counts[~in_cavity] == 1)


@pytest.mark.parametrize("name", PRISMS)
def test_clearance_between_peg_and_walls(name):
  """The peg's section sits inside the cavity with exactly `clearance` to the nearest wall (sampled boundary)."""
  peg = load_peg(name)
  walls = geometry.plate_boxes(geometry.dilate(peg.rects, peg.clearance), peg.wall_margin)
  # points on the peg's boundary: nearest wall distance is >= clearance and the minimum equals it
  d_min = np.inf
  for cx, cy, hx, hy in peg.rects:
    for t in np.linspace(-1, 1, 101):
      for px, py in ((cx + t * hx, cy + hy), (cx + t * hx, cy - hy), (cx + hx, cy + t * hy), (cx - hx, cy + t * hy)):
        if _in_any(np.array(px), np.array(py), peg.rects):
          continue  # interior junction of two rectangles
        for bx, by, bhx, bhy in walls:
          dx, dy = max(abs(px - bx) - bhx, 0), max(abs(py - by) - bhy, 0)
          d_min = min(d_min, math.hypot(dx, dy))
  assert d_min == pytest.approx(peg.clearance, abs=1e-9)


def test_round_hole_ring_clearance_and_scallop():
  """Rays from the axis: where each first meets a wall capsule, minus the peg's radius (the radial gap)."""
  peg = load_peg("round")
  walls = geometry.hole_geoms(peg)
  angles = np.linspace(0, 2 * np.pi, 3601)
  ux, uy = np.cos(angles), np.sin(angles)
  hits = []
  for w in walls:
    proj = ux * w.pos[0] + uy * w.pos[1]
    disc = proj**2 - (w.pos[0] ** 2 + w.pos[1] ** 2) + w.size[0] ** 2
    hits.append(np.where((disc >= 0) & (proj > 0), proj - np.sqrt(np.maximum(disc, 0)), np.inf))
  gaps = np.min(hits, axis=0) - peg.radius
  assert gaps.min() == pytest.approx(peg.clearance, abs=1e-6)
  assert gaps.max() == pytest.approx(peg.clearance + geometry.ring_scallop(peg), abs=2e-5)
  assert geometry.ring_scallop(peg) < peg.clearance


def test_pruning_only_drops_far_pairs():
  peg = load_peg("l_shape")
  all_pairs = set(geometry.contact_pairs(peg, 0.0))
  kept = set(geometry.contact_pairs(peg, 0.002))
  assert kept < all_pairs
  pegs = {g.name: g for g in geometry.peg_geoms(peg)}
  walls = {g.name: g for g in geometry.hole_geoms(peg)}
  for p, w in all_pairs - kept:  # brute force: dropped pairs are >= margin apart in the plane
    a, b = pegs[p], walls[w]
    gap_x = abs(a.pos[0] - b.pos[0]) - a.size[0] - b.size[0]
    gap_y = abs(a.pos[1] - b.pos[1]) - a.size[1] - b.size[1]
    assert max(gap_x, gap_y) >= 0.002


def _spec(**env_over):
  env = base_env_config()
  env.update(env_over)
  return task.make_spec(validate_env(env), load_peg(env.peg))


def test_admittance_matches_closed_form_step_response():
  """Implicit Euler of M a + D v + K x = e against the analytic underdamped response (error O(dt))."""
  m, k, zeta, e = 1.0, 400.0, 0.3, 3.0
  d = 2 * zeta * math.sqrt(m * k)
  w = math.sqrt(k / m)
  wd = w * math.sqrt(1 - zeta**2)
  errs = []
  for dt in (1e-3, 5e-4):
    spec = _spec(control_dt=dt * 10, substeps=1, solref_timeconst=0.05, adm_m=(m,) * 6, adm_d=(d,) * 6,
                 adm_k=(k,) * 6, desired_force=(0.0,) * 6, adm_max_offset=0.05, adm_max_angle=0.5)
    spec = task.dataclasses.replace(spec, dt=dt)
    x, v = np.zeros(6), np.zeros(6)
    worst = 0.0
    for n in range(1, int(0.5 / dt)):
      x, v = task.admittance(spec, x, v, np.full(6, e), np.ones(6), np)
      t = n * dt
      exact = e / k * (1 - math.exp(-zeta * w * t) * (math.cos(wd * t) + zeta * w / wd * math.sin(wd * t)))
      worst = max(worst, abs(x[0] - exact))
    errs.append(worst)
  assert errs[0] < 0.05 * e / k
  assert errs[1] < 0.6 * errs[0]  # first-order convergence
  for _ in range(int(5 / dt)):
    x, v = task.admittance(spec, x, v, np.full(6, e), np.ones(6), np)
  assert x[0] == pytest.approx(e / k, rel=1e-6)  # steady state K x = e


def test_admittance_offset_is_clipped():
  spec = _spec()
  x, v = np.zeros(6), np.zeros(6)
  for _ in range(500):
    x, v = task.admittance(spec, x, v, np.full(6, 1e4), np.ones(6), np)
  np.testing.assert_allclose(np.abs(x), spec.adm_limit)


def test_reference_descends_then_holds():
  spec = _spec()
  start = np.array([1e-3, -1e-3, spec.z_start, 0.01, 0.0, 0.02])
  r1 = task.reference(spec, 1, start, np)
  np.testing.assert_allclose(r1[[0, 1, 3, 4, 5]], start[[0, 1, 3, 4, 5]])
  assert r1[2] == pytest.approx(spec.z_start - spec.insert_speed * spec.dt)
  assert task.reference(spec, 10**6, start, np)[2] == pytest.approx(spec.z_end)


def test_pead_groups_tie_axes():
  spec = _spec(action_groups=(("x", "y"), ("z",), ("rx", "ry"), ("rz",)))
  assert spec.action_size == 4
  inc, k_scale = task.split_action(spec, np.array([1.0, -0.5, 0.2, 2.0]), np)  # the last one clips to 1
  s_m, s_r = 0.0005, 0.005
  np.testing.assert_allclose(inc, [s_m, s_m, -0.5 * s_m, 0.2 * s_r, 0.2 * s_r, s_r])
  np.testing.assert_allclose(k_scale, np.ones(6))


def test_gain_actions_scale_stiffness():
  spec = _spec(action_dims=("x", "y"), gain_action=True, gain_log_range=1.0)
  assert spec.action_size == 4
  _, k_scale = task.split_action(spec, np.array([0.0, 0.0, 1.0, -1.0]), np)
  np.testing.assert_allclose(k_scale, [math.e, 1 / math.e, 1, 1, 1, 1])


@pytest.mark.parametrize("field,value,needle", [
    ("action_dims", ("x", "q"), "env.action_dims"),
    ("adm_k", (1.0, 2.0), "env.adm_k"),
    ("solref_timeconst", 0.001, "env.solref_timeconst"),
    ("action_groups", (("x", "y"),), "env.action_groups"),
    ("substeps", 0, "env.substeps"),
])
def test_bad_env_values_name_the_field(field, value, needle):
  env = base_env_config()
  env[field] = value
  with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
    validate_env(env)
    parse_groups(env.action_groups, (0, 1, 2, 3, 4, 5), "env.action_groups")


def test_unknown_peg_lists_known_ones():
  with pytest.raises(ConfigError, match="known pegs: .*l_shape"):
    load_peg("hexagon")


def test_bad_peg_rect_names_field():
  peg = load_peg("square")
  peg = ml_collections.ConfigDict(peg.to_dict())
  peg.rects = ((0.0, 0.0, -0.01, 0.01),)
  with pytest.raises(ConfigError, match=r"peg\.rects\[0\]"):
    geometry.validate_peg(peg)


@pytest.mark.parametrize("edit,needle", [
    (dict(rects=((0.0, 0.0, 0.5, 0.5),)), r"peg\.rects\[0\]: .* implausible peg"),  # a 1 m peg
    (dict(rects=((0.0, 0.0, 0.0025, 0.0025),), clearance=0.005), r"peg\.clearance: .* is not a fit"),  # 5 mm / 15 mm
    (dict(kind="round", radius=0.0025, clearance=0.0045), r"peg\.clearance: .* is not a fit"),
    (dict(kind="round", radius=0.03, length=0.05), r"peg\.length: .* must exceed the diameter"),
])
def test_implausible_peg_geometry_is_rejected(edit, needle):
  """Inside every field's range but not a peg-in-hole task (issue 25 item 10: these passed validation)."""
  peg = ml_collections.ConfigDict(load_peg("square").to_dict())
  peg.update(edit)
  with pytest.raises(ConfigError, match=needle):
    geometry.validate_peg(peg)
