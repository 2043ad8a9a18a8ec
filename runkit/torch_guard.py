"""The one guard every torch import in this repository goes through: a broken torch_npu must not break torch.

torch auto-loads out-of-tree device backends at `import torch` (every entry point of group `torch.backends`).
A torch_npu installed without Huawei's CANN fails there (`ImportError: libhccl.so: cannot open shared object
file`), and torch turns that into `RuntimeError: Failed to load the backend extension: torch_npu` from `import
torch` itself (README, "Ascend NPUs"), so any binary that touches torch, even only through tensorboardX, would
crash. `guard_torch_import()` turns the autoload off (TORCH_DEVICE_BACKEND_AUTOLOAD=0, unless the user set the
variable) while torch is not yet imported; torch_npu is then imported, guarded, only by `npu_backend.device`,
which says in one line which device it chose and why. Call it before the first `import torch` (or of a library
that imports torch) on every path: `npu_backend/__init__.py` (so every npu_backend module: runtime, fused ops,
export, parity, device) and `runkit.metrics` (tensorboardX) do.
"""

from __future__ import annotations

import os
import sys

AUTOLOAD_VAR = "TORCH_DEVICE_BACKEND_AUTOLOAD"


_SAID = []


def guard_torch_import() -> None:
  """Disables torch's device-backend autoload for this process (and its children) if torch is not imported yet
  and the user has not chosen; a no-op otherwise. Cheap: no import, one environment lookup."""
  if "torch" not in sys.modules:
    os.environ.setdefault(AUTOLOAD_VAR, "0")


def say_skipped_backends(log=None) -> None:
  """One line, once per process, when torch device backends are installed (e.g. torch_npu) but not auto-loaded
  here: a binary that uses torch only on the CPU (the trainers' TensorBoard writer) says why it ignores them."""
  if _SAID or os.environ.get(AUTOLOAD_VAR) != "0":
    return
  from importlib.metadata import entry_points  # noqa: PLC0415

  names = sorted({ep.name for ep in entry_points(group="torch.backends")})
  if names:
    _SAID.append(True)
    (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
        f"torch device backends not loaded ({', '.join(names)}; {AUTOLOAD_VAR}=0): this binary uses torch on the "
        "CPU only")
