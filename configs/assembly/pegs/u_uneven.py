"""Uneven U peg (asymmetric, chamfered): a 30 x 8 mm base with a 24 mm arm on the left and a 16 mm arm on the
right, 50 mm long, 25 mm deep hole, 0.5 mm clearance per side, a 0.8 mm x 2 mm stepped chamfer at the mouth.

No mirror or rotational symmetry (the arms differ), and the hole has a tongue of
plate between the arms, so the peg straddles a wall: contacts on both sides of a
wall, a different insertion mechanism from the convex and L/T pegs. The section is
three overlapping rectangles. Evaluation distribution: lateral error +-2 mm, tilt
+-2 degrees, yaw +-3 degrees (the square's), friction 0.2-0.4, clearance
0.5-0.8 mm per side.
"""

from control_brax.geometry import base_peg


def get_config():
  c = base_peg()
  c.name = "u_uneven"
  c.rects = ((0.0, -0.008, 0.015, 0.004),     # base: x in [-15, 15] mm, y in [-12, -4] mm
             (-0.011, 0.0, 0.004, 0.012),     # left arm: x in [-15, -7] mm, y in [-12, 12] mm
             (0.011, -0.004, 0.004, 0.008))   # right arm: x in [7, 15] mm, y in [-12, 4] mm
  c.chamfer_width = 0.0008  # extra clearance per side at the mouth (m)
  c.chamfer_height = 0.002  # the stepped chamfer's height (m)
  c.eval.lateral_m = 0.002
  c.eval.tilt_deg = 2.0
  c.eval.yaw_deg = 3.0
  c.eval.friction_lo = 0.2
  c.eval.friction_hi = 0.4
  c.eval.extra_clearance_m = 0.0003
  return c
