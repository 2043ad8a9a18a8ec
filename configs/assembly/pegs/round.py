"""Round peg: 20 mm diameter, 50 mm long, in a 25 mm deep hole with 0.5 mm clearance per side.

The peg is a capsule (cylinder + hemispherical tip, which acts as a chamfer of the
peg's radius) and the hole a ring of 32 overlapping vertical capsules: shapes MJX collides well.
"""

from control_brax.geometry import base_peg


def get_config():
  c = base_peg()
  c.name = "round"
  c.kind = "round"
  c.radius = 0.010
  c.round_segments = 32  # scallop between wall capsules: +0.31 mm of clearance at most
  c.eval.lateral_m = 0.002
  c.eval.tilt_deg = 2.0
  c.eval.yaw_deg = 0.0  # a round peg has no yaw error that matters
  return c
