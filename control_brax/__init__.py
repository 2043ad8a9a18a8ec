"""Robotic peg-in-hole assembly on Brax/MJX: environment, compliance controller, RL and the seed papers' methods.

Rendering is headless by default: MuJoCo's EGL backend is selected unless
MUJOCO_GL is already set (osmesa is the fallback: `MUJOCO_GL=osmesa`). This must
happen before the first `import mujoco`, hence here.

Importing the package also registers the C-engine env with gymnasium, one id per peg file under
configs/assembly/pegs/: `gymnasium.make("PegInHole-l_shape-v0")` (control_brax.gym_env).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

ENV_ID = "PegInHole-{peg}-v0"
_PEG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "assembly", "pegs")


def register_gymnasium_envs() -> list:
  """Registers `PegInHole-<peg>-v0` (entry point control_brax.gym_env:PegInHoleGymEnv, kwargs peg=<peg>) for
  every peg file; idempotent; returns the ids (none when gymnasium or the peg directory is absent)."""
  try:
    import gymnasium  # noqa: PLC0415
  except ImportError:
    return []
  if not os.path.isdir(_PEG_DIR):
    return []
  ids = []
  for name in sorted(f[:-3] for f in os.listdir(_PEG_DIR) if f.endswith(".py") and not f.startswith("_")):
    env_id = ENV_ID.format(peg=name)
    if env_id not in gymnasium.registry:
      gymnasium.register(env_id, entry_point="control_brax.gym_env:PegInHoleGymEnv", kwargs={"peg": name})
    ids.append(env_id)
  return ids


register_gymnasium_envs()
