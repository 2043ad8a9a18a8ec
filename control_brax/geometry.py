"""Peg-and-hole geometry from a parameter file, and the MJCF model built from it.

A geometry is data, not code: `configs/assembly/pegs/<name>.py` returns a
`base_peg()` config with the peg's cross-section, the hole's depth, clearance and
optional chamfer, and the geometry's evaluation distribution. This module turns
it into one MJCF string that both engines load (MJX through `mjx.put_model`,
MuJoCo's C engine directly), so the two run the same model.

Shapes MJX collides well (docs/control_brax.md):
* `prism` pegs are unions of axis-aligned boxes (square, rectangle, L, T). The
  hole is a plate with a cavity equal to the peg's section dilated by the
  clearance; the plate is cut into the fewest boxes a row-then-column merge of
  the section's grid gives. Rectangles of a section should overlap (not merely
  touch) so that shrinking each one (clearance randomisation) shrinks the union.
* `round` pegs are capsules (a cylinder with a hemispherical tip, which acts as a
  chamfer of the peg's radius); the hole is a ring of `round_segments`
  overlapping vertical capsules touching a circle of radius r + clearance.
The hole's floor is a plane at z = -hole_depth; its mouth is at z = 0, centred
on the origin. The peg's body frame sits at the peg's tip centre, so the joint
coordinates are directly the tip's pose (x, y, z, rx, ry, rz).

Contacts: only explicit `<pair>`s between peg geoms and hole geoms are collided
(everything else has contype = conaffinity = 0); `prune_margin` drops pairs whose
footprints cannot meet, the main MJX speed lever besides solver iterations.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from confspec import ConfigError, Field, defaults, validate

PEG_SCHEMA = {
    "name": Field(str, "square"),
    "kind": Field(str, "prism", choices=("prism", "round")),
    "rects": Field(tuple, ((0.0, 0.0, 0.010, 0.010),), item=Field(tuple, item=float, length=4), min_len=1,
                   doc="prism pegs: the section as rectangles (cx, cy, hx, hy) in metres, hx, hy > 0"),
    "radius": Field(float, 0.0, lo=0, doc="round pegs: radius (m)"),
    "round_segments": Field(int, 16, lo=6, hi=64, doc="round holes: wall capsules in the ring"),
    "length": Field(float, 0.05, lo=0.005, hi=0.2, doc="peg length (m)"),
    "mass": Field(float, 0.5, lo=0.001, hi=10.0, doc="kg"),
    "clearance": Field(float, 0.0005, lo=0.0001, hi=0.005, doc="nominal clearance per side (m), the smallest sampled"),
    "hole_depth": Field(float, 0.025, lo=0.002, hi=0.1, doc="m"),
    "wall_margin": Field(float, 0.015, lo=0.002, hi=0.1, doc="plate width around the cavity (m)"),
    "chamfer_width": Field(float, 0.0, lo=0, hi=0.01, doc="extra clearance per side at the mouth (m); 0 = none"),
    "chamfer_height": Field(float, 0.0, lo=0, hi=0.05, doc="height of the stepped chamfer (m)"),
    "eval": {
        "lateral_m": Field(float, 0.002, lo=0, hi=0.02, doc="initial x, y error uniform in +-value"),
        "tilt_deg": Field(float, 2.0, lo=0, hi=20, doc="initial rx, ry error uniform in +-value"),
        "yaw_deg": Field(float, 3.0, lo=0, hi=45, doc="initial rz error uniform in +-value"),
        "friction_lo": Field(float, 0.2, lo=0, hi=2),
        "friction_hi": Field(float, 0.4, lo=0, hi=2),
        "extra_clearance_m": Field(float, 0.0003, lo=0, hi=0.005, doc="clearance = nominal + uniform [0, value]"),
    },
}


def base_peg() -> ml_collections.ConfigDict:
  """The declared defaults every peg file starts from (a 20 mm square peg, 0.5 mm clearance)."""
  return defaults(PEG_SCHEMA)


# Plausible geometry (the scene, the arm's workspace and the controller's gains are sized for pegs of a few
# centimetres): the section within a square of this half-width around the peg's axis, and the clearance per side
# (nominal plus the largest sampled extra) at most this fraction of the section's smallest half-size.
MAX_SECTION_HALF_M = 0.05
MAX_CLEARANCE_RATIO = 0.25


def _check_rects(c) -> None:
  if c.kind == "round":
    if c.radius <= 0:
      raise ConfigError("peg.radius: must be > 0 for a round peg")
    if c.radius > MAX_SECTION_HALF_M:
      raise ConfigError(f"peg.radius: {c.radius:g} m is implausible; allowed: at most {MAX_SECTION_HALF_M:g} m")
    if c.length <= 2 * c.radius:
      raise ConfigError(f"peg.length: {c.length:g} m must exceed the diameter of the round peg ({2 * c.radius:g} m)")
    smallest = c.radius
  else:
    for i, r in enumerate(c.rects):  # the schema checked the shape: a list of (cx, cy, hx, hy)
      if r[2] <= 0 or r[3] <= 0:
        raise ConfigError(f"peg.rects[{i}]: {r!r} must be (cx, cy, hx, hy) with hx, hy > 0 (m)")
      if min(r[2], r[3]) <= c.eval.extra_clearance_m:
        raise ConfigError(f"peg.rects[{i}]: half-sizes must exceed peg.eval.extra_clearance_m")
      if max(abs(r[0]) + r[2], abs(r[1]) + r[3]) > MAX_SECTION_HALF_M:
        raise ConfigError(f"peg.rects[{i}]: {r!r} reaches {max(abs(r[0]) + r[2], abs(r[1]) + r[3]):g} m from the "
                          f"peg's axis, an implausible peg; allowed: within {MAX_SECTION_HALF_M:g} m")
    smallest = min(min(r[2], r[3]) for r in c.rects)
  widest = c.clearance + c.eval.extra_clearance_m
  if widest > MAX_CLEARANCE_RATIO * smallest:
    raise ConfigError(f"peg.clearance: {c.clearance:g} m (+ eval.extra_clearance_m {c.eval.extra_clearance_m:g}) "
                      f"per side around a section whose smallest half-size is {smallest:g} m is not a fit; allowed: "
                      f"at most {MAX_CLEARANCE_RATIO:g} x that ({MAX_CLEARANCE_RATIO * smallest:g} m)")


def _check_ranges(c) -> None:
  if c.eval.friction_hi < c.eval.friction_lo:
    raise ConfigError("peg.eval.friction_hi: must be >= peg.eval.friction_lo")
  if c.chamfer_height >= c.hole_depth:
    raise ConfigError("peg.chamfer_height: must be < peg.hole_depth")


def validate_peg(c) -> ml_collections.ConfigDict:
  """Checks a peg file's config; raises ConfigError naming the field."""
  return validate(c, PEG_SCHEMA, checks=(_check_rects, _check_ranges), root="peg")


# ----------------------------------------------------------------------------- decomposition


def dilate(rects, by: float):
  """Each rectangle grown by `by` on every side (negative shrinks)."""
  return tuple((cx, cy, hx + by, hy + by) for cx, cy, hx, hy in rects)


def _inside(x: float, y: float, rects) -> bool:
  return any(abs(x - cx) < hx and abs(y - cy) < hy for cx, cy, hx, hy in rects)


def plate_boxes(cavity, margin: float):
  """Boxes (cx, cy, hx, hy) tiling the bounding square of `cavity` + margin minus the cavity.

  Grid of all edge coordinates; empty cells merged along rows, then equal strips
  merged down columns. Exact for unions of axis-aligned rectangles.
  """
  lo = min(min(cx - hx, cy - hy) for cx, cy, hx, hy in cavity) - margin
  hi = max(max(cx + hx, cy + hy) for cx, cy, hx, hy in cavity) + margin
  xs = sorted({lo, hi, *(cx - hx for cx, _, hx, _ in cavity), *(cx + hx for cx, _, hx, _ in cavity)})
  ys = sorted({lo, hi, *(cy - hy for _, cy, _, hy in cavity), *(cy + hy for _, cy, _, hy in cavity)})
  rows = []
  for j in range(len(ys) - 1):
    strips, start = [], None
    for i in range(len(xs) - 1):
      solid = not _inside(0.5 * (xs[i] + xs[i + 1]), 0.5 * (ys[j] + ys[j + 1]), cavity)
      if solid and start is None:
        start = i
      if not solid and start is not None:
        strips.append((xs[start], xs[i]))
        start = None
    if start is not None:
      strips.append((xs[start], xs[-1]))
    rows.append(strips)
  boxes, open_ = [], {}  # open_: strip -> y start
  for j, strips in enumerate(rows + [[]]):
    for s in list(open_):
      if s not in strips:
        y0 = open_.pop(s)
        boxes.append(((s[0] + s[1]) / 2, (y0 + ys[j]) / 2, (s[1] - s[0]) / 2, (ys[j] - y0) / 2))
    for s in strips:
      open_.setdefault(s, ys[j])
  return tuple(boxes)


@dataclasses.dataclass(frozen=True)
class Geom:
  """One geom of the model: centre, sizes, rotation about z (rad), box or vertical capsule."""

  name: str
  pos: tuple[float, float, float]
  size: tuple[float, float, float]  # box: half sizes; capsule: (radius, half length of the axis, 0)
  yaw: float = 0.0
  kind: str = "box"


_RING_CAPSULE_RADIUS = 0.003  # m, wall capsules of round holes


def ring_scallop(c) -> float:
  """Round holes: the extra clearance (m) midway between two wall capsules."""
  n, rho = c.round_segments, _RING_CAPSULE_RADIUS
  rc = c.radius + c.clearance + rho
  half_gap = rc * math.sin(math.pi / n)
  return rc * math.cos(math.pi / n) - math.sqrt(max(rho**2 - half_gap**2, 0.0)) - (c.radius + c.clearance)


def hole_geoms(c) -> list[Geom]:
  """The hole's wall boxes (mouth at z = 0, floor at z = -hole_depth)."""
  layers = [(c.clearance, -c.hole_depth, -c.chamfer_height)]
  if c.chamfer_height > 0 and c.chamfer_width > 0:
    layers.append((c.clearance + c.chamfer_width, -c.chamfer_height, 0.0))
  else:
    layers = [(c.clearance, -c.hole_depth, 0.0)]
  out = []
  for li, (clear, z0, z1) in enumerate(layers):
    zc, hz = 0.5 * (z0 + z1), 0.5 * (z1 - z0)
    if c.kind == "round":
      # A ring of overlapping vertical capsules: capsule-capsule contact is exact in MJX (its capsule-box
      # contact penetrated ~1 mm here where the C engine's stayed ~0.1 mm). The inner boundary is scalloped
      # between r + clearance (at each capsule) and r + clearance + scallop (between two).
      n, rho = c.round_segments, _RING_CAPSULE_RADIUS
      rc = c.radius + clear + rho
      for i in range(n):
        a = 2 * math.pi * i / n
        # caps inside the layer: the top cap's apex at the layer's top (a rounded mouth)
        out.append(Geom(f"wall{li}_{i}", (rc * math.cos(a), rc * math.sin(a), zc), (rho, max(hz - rho, 1e-4), 0.0),
                        kind="capsule"))
    else:
      for i, (cx, cy, hx, hy) in enumerate(plate_boxes(dilate(c.rects, clear), c.wall_margin)):
        out.append(Geom(f"wall{li}_{i}", (cx, cy, zc), (hx, hy, hz)))
  return out


def peg_geoms(c) -> list[Geom]:
  """The peg's boxes (or capsule) in its body frame, whose origin is the tip centre."""
  if c.kind == "round":
    return [Geom("peg0", (0.0, 0.0, c.length / 2), (c.radius, c.length / 2 - c.radius, 0.0), kind="capsule")]
  return [Geom(f"peg{i}", (cx, cy, c.length / 2), (hx, hy, c.length / 2)) for i, (cx, cy, hx, hy) in
          enumerate(c.rects)]


def _footprint(g: Geom) -> tuple[float, float, float, float]:
  """Axis-aligned 2-D bounds (x0, y0, x1, y1) of a geom's footprint (capsules are vertical)."""
  if g.kind == "capsule":
    r = g.size[0]
    return g.pos[0] - r, g.pos[1] - r, g.pos[0] + r, g.pos[1] + r
  ca, sa = abs(math.cos(g.yaw)), abs(math.sin(g.yaw))
  ex = ca * g.size[0] + sa * g.size[1]
  ey = sa * g.size[0] + ca * g.size[1]
  return g.pos[0] - ex, g.pos[1] - ey, g.pos[0] + ex, g.pos[1] + ey


def contact_pairs(c, prune_margin: float) -> list[tuple[str, str]]:
  """(peg geom, hole geom) pairs to collide; pairs farther apart than `prune_margin` are dropped.

  `prune_margin` must cover how far the peg can move from the hole's axis (the
  largest lateral error plus the tilt times the peg length, plus the action's
  reach); a value <= 0 keeps every pair.
  """
  pegs, walls = peg_geoms(c), hole_geoms(c)
  pairs = []
  for p in pegs:
    px0, py0, px1, py1 = _footprint(p)
    for w in walls:
      wx0, wy0, wx1, wy1 = _footprint(w)
      gap = max(wx0 - px1, px0 - wx1, wy0 - py1, py0 - wy1)
      if prune_margin <= 0 or gap < prune_margin:
        pairs.append((p.name, w.name))
    pairs.append((p.name, "floor"))
  return pairs


# ----------------------------------------------------------------------------- MJCF


@dataclasses.dataclass(frozen=True)
class PhysicsSpec:
  """Solver and holder settings shared by both engines. The configurable ones have no default here: they are
  declared once, in the env config's schema (`control_brax.config`), and `envs.physics_spec` fills them; the two
  constants below are not configurable."""

  timestep: float
  iterations: int
  ls_iterations: int
  solref: tuple[float, float]
  solimp: tuple[float, float, float]
  kp_trans: float
  kv_trans: float
  kp_rot: float
  kv_rot: float
  prune_margin: float
  friction: float = 0.3  # sliding friction of every peg-hole contact
  armature_rot: float = 0.01  # rotational armature of the holder joints (kg m^2)


def _f(*v: float) -> str:
  return " ".join(f"{x:.6g}" for x in v)


def build_mjcf(c, phys: PhysicsSpec) -> str:
  """The MJCF of peg, holder joints and actuators, hole and explicit contact pairs."""
  pegs, walls = peg_geoms(c), hole_geoms(c)
  solref, solimp = _f(*phys.solref), _f(*phys.solimp)
  fr = _f(phys.friction, phys.friction, 0.005, 0.0001, 0.0001)
  lines = [
      f'<mujoco model="peg_in_hole_{c.name}">',
      '  <compiler angle="radian" autolimits="true"/>',
      f'  <option timestep="{phys.timestep:.6g}" iterations="{phys.iterations}" '
      f'ls_iterations="{phys.ls_iterations}" gravity="0 0 0" integrator="Euler" cone="pyramidal">',
      '    <flag warmstart="disable"/>',
      "  </option>",
      '  <visual><global offwidth="640" offheight="480"/></visual>',
      "  <default>",
      f'    <geom contype="0" conaffinity="0" solref="{solref}" solimp="{solimp}" friction="{phys.friction:.6g}"/>',
      "  </default>",
      "  <worldbody>",
      '    <light pos="0.05 -0.05 0.3" dir="-0.2 0.2 -1"/>',
      '    <camera name="side" pos="0.1 -0.1 0.07" xyaxes="0.7071 0.7071 0 -0.06 0.06 0.2"/>',
      f'    <geom name="floor" type="plane" pos="0 0 {-c.hole_depth:.6g}" size="0.1 0.1 0.01" rgba="0.5 0.5 0.5 1"/>',
  ]
  for w in walls:
    if w.kind == "capsule":
      x, y, z = w.pos
      lines.append(f'    <geom name="{w.name}" type="capsule" fromto="{_f(x, y, z - w.size[1], x, y, z + w.size[1])}" '
                   f'size="{w.size[0]:.6g}" rgba="0.55 0.6 0.7 0.45"/>')
      continue
    q = _f(math.cos(w.yaw / 2), 0, 0, math.sin(w.yaw / 2))
    lines.append(f'    <geom name="{w.name}" type="box" pos="{_f(*w.pos)}" size="{_f(*w.size)}" quat="{q}" '
                 'rgba="0.55 0.6 0.7 0.45"/>')
  lines.append('    <body name="peg" pos="0 0 0">')
  for name, axis in (("x", "1 0 0"), ("y", "0 1 0"), ("z", "0 0 1")):
    lines.append(f'      <joint name="{name}" type="slide" axis="{axis}"/>')
  for name, axis in (("rx", "1 0 0"), ("ry", "0 1 0"), ("rz", "0 0 1")):
    lines.append(f'      <joint name="{name}" type="hinge" axis="{axis}" armature="{phys.armature_rot:.6g}"/>')
  density_vol = sum(4 * p.size[0] * p.size[1] * 2 * p.size[2] for p in pegs) if c.kind == "prism" else (
      math.pi * c.radius ** 2 * c.length)
  density = c.mass / density_vol
  for p in pegs:
    if c.kind == "round":
      lines.append(f'      <geom name="{p.name}" type="capsule" fromto="0 0 {c.radius:.6g} 0 0 '
                   f'{c.length - c.radius:.6g}" size="{c.radius:.6g}" density="{density:.6g}" rgba="0.85 0.5 0.2 1"/>')
    else:
      lines.append(f'      <geom name="{p.name}" type="box" pos="{_f(*p.pos)}" size="{_f(*p.size)}" '
                   f'density="{density:.6g}" rgba="0.85 0.5 0.2 1"/>')
  lines += ['      <site name="tip" pos="0 0 0" size="0.001"/>', "    </body>", "  </worldbody>", "  <contact>"]
  for a, b in contact_pairs(c, phys.prune_margin):
    lines.append(f'    <pair geom1="{a}" geom2="{b}" condim="3" friction="{fr}" solref="{solref}" solimp="{solimp}"/>')
  lines += ["  </contact>", "  <actuator>"]
  for name in ("x", "y", "z"):
    lines.append(f'    <position name="a_{name}" joint="{name}" kp="{phys.kp_trans:.6g}" kv="{phys.kv_trans:.6g}"/>')
  for name in ("rx", "ry", "rz"):
    lines.append(f'    <position name="a_{name}" joint="{name}" kp="{phys.kp_rot:.6g}" kv="{phys.kv_rot:.6g}"/>')
  lines += ["  </actuator>", "</mujoco>"]
  return "\n".join(lines)
