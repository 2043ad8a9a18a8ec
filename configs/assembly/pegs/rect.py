"""Rectangular peg: 30 x 14 mm section, 50 mm long, 25 mm deep hole, 0.5 mm clearance per side."""

from control_brax.geometry import base_peg


def get_config():
  c = base_peg()
  c.name = "rect"
  c.rects = ((0.0, 0.0, 0.015, 0.007),)
  c.eval.lateral_m = 0.002
  c.eval.tilt_deg = 2.0
  c.eval.yaw_deg = 3.0
  return c
