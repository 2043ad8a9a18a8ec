"""Keyed square peg (asymmetric, chamferless): a 20 mm square with an 8 x 8 mm key on its +x face, 50 mm long,
25 mm deep hole with a matching keyway, 0.5 mm clearance per side, no chamfer.

The key breaks the square's four-fold symmetry: only one yaw fits. The section is
two overlapping rectangles (the key overlaps the square by 1 mm, so shrinking each
shrinks the union). Evaluation distribution: lateral error +-2 mm, tilt +-2 degrees,
yaw +-12 degrees: wider than the square's +-3 degrees, so that the yaw has to be
found before the peg can enter (the claims ladder's transfer target that a square
policy is not expected to insert, docs/claims_declaration.md). Friction 0.2-0.4,
clearance 0.5-0.8 mm per side.
"""

from control_brax.geometry import base_peg


def get_config():
  c = base_peg()
  c.name = "keyed_square"
  c.rects = ((0.0, 0.0, 0.010, 0.010),    # body: x, y in [-10, 10] mm
             (0.013, 0.0, 0.004, 0.004))  # key: x in [9, 17] mm, y in [-4, 4] mm (overlaps the body by 1 mm)
  c.chamfer_width = 0.0  # chamferless: the hole's walls are straight down to the mouth
  c.chamfer_height = 0.0
  c.eval.lateral_m = 0.002
  c.eval.tilt_deg = 2.0
  c.eval.yaw_deg = 12.0
  c.eval.friction_lo = 0.2
  c.eval.friction_hi = 0.4
  c.eval.extra_clearance_m = 0.0003
  return c
