"""Export JAX graphs to PyTorch for Ascend NPUs (torch_npu), CUDA or CPU; prove parity with the JAX reference.

Importing this package imports neither JAX nor torch_npu: `npu_backend.runtime` (loading and running an
export) needs torch only; `npu_backend.export` (tracing) needs JAX.

Importing it does run `runkit.torch_guard.guard_torch_import()`: every module of the package that imports torch
(runtime, fused ops, export, parity, device) is then safe from a torch_npu that fails to load (README, "Ascend
NPUs").
"""

from runkit.torch_guard import guard_torch_import

guard_torch_import()
