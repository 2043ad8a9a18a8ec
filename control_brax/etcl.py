"""ETCL (our definition): an equivalence law that carries compliance parameters from one peg geometry to another.

The paper (Gai et al., arXiv 2211.02443) does not publish its law, so this module
defines one from contact mechanics and documents it (docs/control_brax_transfer.md).
Everything is a pure function of two peg parameter files' geometric features:

* `features(peg)` reads the peg's cross-section (a union of rectangles, or a
  circle), rasterised, and returns the numbers the law uses: the clearance, the
  projected rim length (the length of section boundary that can land on the hole's
  rim), and per rotation axis the *rim lever arm*: the mean distance from the tip's
  axis of the boundary edges that can touch the rim when the peg is misaligned
  across that axis (contact happens at the peg's edges, not over its face).
* `reconfigure(gains, feat_a, feat_b, law)` maps the admittance gains (M, D, K per axis
  and the desired wrench) tuned on A to B: one factor per axis on M, D and K together
  (so every axis keeps its natural frequency sqrt(K / M) and damping ratio
  D / (2 sqrt(M K)): the loop's transient behaviour is the same on B) and one factor on
  the desired wrench. Three laws (`scale_factors`; derivations and measurements in
  docs/control_brax_transfer.md):

  - "wrench" (v3, `DEFAULT_LAW`): the admittance's input is the measured wrench, which
    already carries the geometry, so only the commanded force (by the rim-length ratio,
    equal contact line load) and the lateral stiffness (by the clearance ratio, equal
    lateral deflection relative to the clearance per unit measured force) change;
  - "torque" (v2, the transfer comparison's): as v3 plus x, y and z stiffness scaled with
    the force factor (equal set-point deflection relative to the clearance); rotation
    unchanged;
  - "angle" (v1, kept for the record; failed the check): as v2 plus rotation scaled to keep
    the set-point force's tilt at the rim lever arm equal.

  The acceptance check (`python -m experiments.etcl_acceptance`) runs both gain sets on
  the same paired episodes of the scripted controller.
"""

from __future__ import annotations

import dataclasses

import numpy as np

AXES = ("x", "y", "z", "rx", "ry", "rz")


@dataclasses.dataclass(frozen=True)
class Features:
  """Geometric features of one peg-and-hole (metres)."""

  name: str
  clearance: float  # mean clearance per side over the evaluation distribution: nominal + extra / 2
  area: float  # cross-section area (m^2)
  rim_x: float  # projected length of boundary edges facing +-x (m): can land on the rim under an x error
  rim_y: float  # the same for +-y
  lever_rx: float  # mean |y| of the +-y facing edges: rim contacts' lever arm about x
  lever_ry: float  # mean |x| of the +-x facing edges: about y
  lever_rz: float  # mean tangential offset of all edges: a wall's lateral force's lever arm about z
  mass: float
  length: float

  @property
  def rim_length(self) -> float:
    return self.rim_x + self.rim_y


def section_mask(peg, h: float = 1e-4):
  """Raster of the section in the tip frame: (inside (ny, nx) bool, x centres, y centres), cell size h."""
  if peg.kind == "round":
    r = float(peg.radius)
    x0, x1, y0, y1 = -r, r, -r, r
  else:
    rects = [tuple(map(float, r)) for r in peg.rects]
    x0 = min(cx - hx for cx, _, hx, _ in rects)
    x1 = max(cx + hx for cx, _, hx, _ in rects)
    y0 = min(cy - hy for _, cy, _, hy in rects)
    y1 = max(cy + hy for _, cy, _, hy in rects)
  xs = np.arange(x0 - 2 * h, x1 + 2 * h, h) + h / 2
  ys = np.arange(y0 - 2 * h, y1 + 2 * h, h) + h / 2
  gx, gy = np.meshgrid(xs, ys)
  if peg.kind == "round":
    inside = gx ** 2 + gy ** 2 < float(peg.radius) ** 2
  else:
    inside = np.zeros_like(gx, bool)
    for cx, cy, hx, hy in rects:
      inside |= (np.abs(gx - cx) < hx) & (np.abs(gy - cy) < hy)
  return inside, xs, ys


def features(peg, h: float = 1e-4) -> Features:
  """The features ETCL uses, from a validated peg config (`control_brax.config.load_peg`)."""
  inside, xs, ys = section_mask(peg, h)
  gx, gy = np.meshgrid(xs, ys)
  # Edges between an inside cell and an outside neighbour along x (facing +-x) and along y.
  fx = inside[:, 1:] != inside[:, :-1]  # (ny, nx - 1)
  fy = inside[1:, :] != inside[:-1, :]  # (ny - 1, nx)
  ex_x = 0.5 * (gx[:, 1:] + gx[:, :-1])[fx]
  ex_y = gy[:, 1:][fx]
  ey_x = gx[1:, :][fy]
  ey_y = 0.5 * (gy[1:, :] + gy[:-1, :])[fy]
  rim_x, rim_y = fx.sum() * h, fy.sum() * h
  tangential = np.concatenate([np.abs(ex_y), np.abs(ey_x)])
  return Features(
      name=str(peg.name), clearance=float(peg.clearance + 0.5 * peg.eval.extra_clearance_m),
      area=float(inside.sum() * h * h), rim_x=float(rim_x), rim_y=float(rim_y),
      lever_rx=float(np.abs(ey_y).mean()), lever_ry=float(np.abs(ex_x).mean()), lever_rz=float(tangential.mean()),
      mass=float(peg.mass), length=float(peg.length))


@dataclasses.dataclass(frozen=True)
class Gains:
  """Admittance parameters: per-axis M, D, K (x, y, z, rx, ry, rz) and the desired wrench."""

  m: tuple
  d: tuple
  k: tuple
  desired: tuple

  @classmethod
  def from_env(cls, env) -> Gains:
    return cls(tuple(map(float, env.adm_m)), tuple(map(float, env.adm_d)), tuple(map(float, env.adm_k)),
               tuple(map(float, env.desired_force)))

  def apply(self, env):
    """A copy of the `env` section with these gains."""
    import ml_collections  # noqa: PLC0415

    out = ml_collections.ConfigDict(env.to_dict())
    out.adm_m, out.adm_d, out.adm_k = self.m, self.d, self.k
    out.desired_force = self.desired
    return out

  def natural_frequency(self) -> np.ndarray:
    return np.sqrt(np.asarray(self.k) / np.asarray(self.m))

  def damping_ratio(self) -> np.ndarray:
    return np.asarray(self.d) / (2 * np.sqrt(np.asarray(self.m) * np.asarray(self.k)))


LAWS = ("torque", "angle", "wrench")
# The law `reconfigure` applies unless told otherwise: v3, after the declared decisive check (4000 paired episodes
# per case, docs/control_brax_transfer.md). The transfer comparison pins its own (`transfer.etcl_law`).
DEFAULT_LAW = "wrench"


def scale_factors(fa: Features, fb: Features, law: str = DEFAULT_LAW) -> tuple[np.ndarray, float]:
  """(per-axis factor on M, D and K (6,), factor on the desired wrench) of the law A -> B.

  `law="torque"` (v2; the transfer comparison's): rotational gains unchanged (torque-space equivalence: the
  measured torque already carries the lever arm). `law="angle"` (v1, kept for the record; it failed the check):
  rotational gains also scale with the rim lever arm so that the set-point force's tilt is equal.
  `law="wrench"` (v3, `DEFAULT_LAW`): v2's argument applied to every axis: the admittance's input is the
  measured wrench, which already carries the geometry (a longer rim presses more lateral force for the same slip,
  a longer lever arm more torque), so only the commanded quantity (the desired force, by the rim length) and the
  tolerance (the lateral stiffness, by the clearance ratio: equal lateral deflection relative to the clearance
  for the same measured force) are rescaled.
  """
  if law not in LAWS:
    raise ValueError(f"law: {law!r} must be one of {LAWS}")
  f = fb.rim_length / fa.rim_length
  c = fa.clearance / fb.clearance
  if law == "wrench":
    return np.array([c, c, 1.0, 1.0, 1.0, 1.0]), f
  if law == "angle":
    rot = [f * fb.lever_rx / fa.lever_rx, f * fb.lever_ry / fa.lever_ry, f * fb.lever_rz / fa.lever_rz]
  else:
    rot = [1.0, 1.0, 1.0]
  return np.array([f * c, f * c, f, *rot]), f


def reconfigure(gains: Gains, fa: Features, fb: Features, law: str = DEFAULT_LAW) -> Gains:
  """The gains tuned for geometry A carried to geometry B (the module docstring's law)."""
  s, f = scale_factors(fa, fb, law)
  return Gains(m=tuple(float(x) for x in np.asarray(gains.m) * s), d=tuple(float(x) for x in np.asarray(gains.d) * s),
               k=tuple(float(x) for x in np.asarray(gains.k) * s),
               desired=tuple(float(x) for x in np.asarray(gains.desired) * f))


def reconfigure_env(env, peg_a, peg_b, law: str = DEFAULT_LAW):
  """`env` (gains tuned on peg A) with its admittance gains carried to peg B by ETCL; env.peg unchanged."""
  return reconfigure(Gains.from_env(env), features(peg_a), features(peg_b), law).apply(env)


# ----------------------------------------------------------------------------- the scripted acceptance check
