"""Guarded device choice: `npu` when torch_npu imports and reports a device, else `cuda`, else `cpu`.

torch_npu installed without Huawei's CANN fails in several ways, each of which must fall back, not crash:
  * ImportError / OSError at `import torch_npu` (e.g. `libhccl.so: cannot open shared object file`);
  * RuntimeError from torch's own backend autoload at `import torch` ("Failed to load the backend extension:
    torch_npu ... TORCH_DEVICE_BACKEND_AUTOLOAD=0"): `runkit.torch_guard.guard_torch_import` sets
    TORCH_DEVICE_BACKEND_AUTOLOAD=0 before torch is first imported (importing `npu_backend` does it), then we
    import torch_npu ourselves under a guard;
  * RuntimeError at first device use (driver or firmware missing): we run a tiny op on the device.
`select_device` returns the device and a one-line reason, so every binary can say what it chose and why.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from runkit.torch_guard import guard_torch_import

CHOICES = ("auto", "npu", "cuda", "cpu")


class DeviceChoice(NamedTuple):
  device: str  # "npu" | "cuda" | "cpu": the backend
  reason: str  # one line
  torch_device: str = ""  # where tensors go ("cpu" for the mock torch_npu); defaults to `device`

  @property
  def tensor_device(self) -> str:
    return self.torch_device or self.device


def import_torch():
  """`import torch` without letting a broken torch_npu break it (disables backend autoload if torch is new)."""
  guard_torch_import()
  import torch  # noqa: PLC0415

  return torch


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:160] if text else ''}"


def _try_npu(torch) -> tuple[bool, str]:
  try:
    import torch_npu  # noqa: F401, PLC0415
  except (ImportError, OSError, RuntimeError) as e:
    return False, f"torch_npu unavailable ({_first_line(e)})"
  mock = getattr(sys.modules["torch_npu"], "MOCK_DEVICE", None)
  if mock:
    return True, f"mock torch_npu (NPU ops run on {mock})"
  try:
    if not (hasattr(torch, "npu") and torch.npu.is_available() and torch.npu.device_count() > 0):
      return False, "torch_npu imported but reports no NPU"
    (torch.ones(1, device="npu") + 1).cpu()
  except (RuntimeError, AttributeError, AssertionError) as e:
    return False, f"NPU unusable at first use ({_first_line(e)})"
  version = getattr(sys.modules.get("torch_npu"), "__version__", "?")
  return True, f"torch_npu {version} with {torch.npu.device_count()} NPU(s)"


def select_device(requested: str = "auto") -> DeviceChoice:
  """Chooses the torch device; `requested` forces one (falling back, with the reason, if it is unusable)."""
  if requested not in CHOICES:
    raise ValueError(f"--device: {requested!r} is not allowed; allowed: {', '.join(CHOICES)}")
  torch = import_torch()
  notes = []
  if requested in ("auto", "npu"):
    ok, why = _try_npu(torch)
    if ok:
      return DeviceChoice("npu", why, getattr(sys.modules["torch_npu"], "MOCK_DEVICE", None) or "npu")
    notes.append(why)
  if requested in ("auto", "cuda", "npu"):
    if torch.cuda.is_available():
      return DeviceChoice("cuda", "; ".join(notes + [f"CUDA device {torch.cuda.get_device_name(0)}"]))
    notes.append("no CUDA device")
  return DeviceChoice("cpu", "; ".join(notes + ["using CPU"]) if requested != "cpu" else "CPU requested")
