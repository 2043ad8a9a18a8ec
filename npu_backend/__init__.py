"""Export JAX graphs to PyTorch for Ascend NPUs (torch_npu), CUDA or CPU; prove parity with the JAX reference.

Importing this package imports neither JAX nor torch_npu: `npu_backend.runtime` (loading and running an
export) needs torch only; `npu_backend.export` (tracing) needs JAX.
"""
