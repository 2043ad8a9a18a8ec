"""Run test code in a fresh Python process with N simulated CPU devices.

XLA reads `--xla_force_host_platform_device_count` only when JAX starts, so any
test that needs several devices runs its body in a subprocess with the flag set
in the environment before `import jax`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_with_devices(code: str, n: int = 8, timeout: float = 600) -> str:
  """Runs `code` with n CPU devices; returns its stdout; raises with its stderr on failure."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                        timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc.stdout
