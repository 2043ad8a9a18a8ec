"""Robotic peg-in-hole assembly on Brax/MJX: environment, compliance controller, RL and the seed papers' methods.

Rendering is headless by default: MuJoCo's EGL backend is selected unless
MUJOCO_GL is already set (osmesa is the fallback: `MUJOCO_GL=osmesa`). This must
happen before the first `import mujoco`, hence here.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
