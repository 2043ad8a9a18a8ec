"""L-shaped peg (the shared asymmetric peg): two 30 x 12 mm arms, 50 mm long, 25 mm deep hole, 0.5 mm clearance.

The section is two overlapping rectangles (an arm along x and an arm along y
sharing the 12 x 12 mm corner), so shrinking each one shrinks the union.
Evaluation distribution: lateral error uniform within +-3 mm, tilt +-3 degrees,
yaw +-5 degrees, friction 0.2-0.4, clearance 0.5-0.8 mm per side.
"""

from control_brax.geometry import base_peg


def get_config():
  c = base_peg()
  c.name = "l_shape"
  c.rects = ((0.009, 0.0, 0.015, 0.006),   # arm along x: x in [-6, 24] mm, y in [-6, 6] mm
             (0.0, 0.009, 0.006, 0.015))   # arm along y: x in [-6, 6] mm, y in [-6, 24] mm
  c.eval.lateral_m = 0.003
  c.eval.tilt_deg = 3.0
  c.eval.yaw_deg = 5.0
  c.eval.friction_lo = 0.2
  c.eval.friction_hi = 0.4
  c.eval.extra_clearance_m = 0.0003
  return c
