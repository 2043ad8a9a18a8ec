"""T-shaped peg: a 36 x 10 mm bar with a 10 x 20 mm stem, 50 mm long, 25 mm deep hole, 0.5 mm clearance."""

from control_brax.geometry import base_peg


def get_config():
  c = base_peg()
  c.name = "t_shape"
  c.rects = ((0.0, 0.010, 0.018, 0.005),   # bar: x in [-18, 18] mm, y in [5, 15] mm
             (0.0, 0.0, 0.005, 0.012))     # stem: x in [-5, 5] mm, y in [-12, 12] mm (overlaps the bar)
  c.eval.lateral_m = 0.002
  c.eval.tilt_deg = 2.0
  c.eval.yaw_deg = 3.0
  return c
