"""MuJoCo as every control_brax module imports it: import this module before `mujoco`, `mujoco.mjx` or brax.

Two of MuJoCo's import-time and run-time habits do not belong in a binary's output:
  * `mujoco.mjx` prints "Failed to import warp: ..." and "Failed to import mujoco_warp: ..." on stdout when the
    optional warp package is absent (it is: MJX runs on JAX here), so every control_brax binary printed them;
    they are dropped (any other line the import prints is passed on);
  * MuJoCo's C engine appends its warnings to MUJOCO_LOG.TXT in the current directory (one ended up committed
    in the repository root); the log file is turned off, the warnings still go to the console.
"""

from __future__ import annotations

import contextlib
import io

_WARP_NOTICES = ("Failed to import warp:", "Failed to import mujoco_warp:")


def _setup() -> None:
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    import mujoco.mjx  # noqa: F401, PLC0415
  for line in buf.getvalue().splitlines():
    if not line.startswith(_WARP_NOTICES):
      print(line)
  import mujoco  # noqa: PLC0415

  log = getattr(mujoco, "MjLogConfig", None)  # MuJoCo >= 4
  if log is not None:
    cfg = log.get()
    cfg.logto_file = False
    cfg.set()


_setup()
