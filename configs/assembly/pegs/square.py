"""Square peg: 20 mm side, 50 mm long, in a 25 mm deep hole with 0.5 mm clearance per side.

Geometry and the evaluation distribution in one file; a new geometry is a new file
(docs/control_brax.md lists the fields). Lengths in metres, angles in degrees.
"""

from control_brax.geometry import base_peg


def get_config():
  c = base_peg()
  c.name = "square"
  c.kind = "prism"
  c.rects = ((0.0, 0.0, 0.010, 0.010),)  # (centre x, centre y, half x, half y) of each rectangle of the section
  # Evaluation distribution: uniform within +-value (lateral per axis, tilt per axis, yaw).
  c.eval.lateral_m = 0.002
  c.eval.tilt_deg = 2.0
  c.eval.yaw_deg = 3.0
  return c
