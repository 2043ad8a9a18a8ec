"""A mock `torch_npu` for CI: the fused ops backed by npu_backend.fused.reference, and an `npu` device alias.

Put `npu_backend/testing/mock_torch_npu` first on sys.path (the parity binary's `--mock_npu` does this) and
`import torch_npu` succeeds on any machine; `torch.npu.is_available()` is True with one device; tensors for
"npu" live on `MOCK_DEVICE` ("cpu"), which npu_backend.device reads. The whole NPU lowering path then executes
without Ascend hardware. Never install this next to the real plugin.
"""

import types

import torch

from npu_backend.fused.reference import OPS as _OPS

__version__ = "0.0+mock"
MOCK_DEVICE = "cpu"

globals().update(_OPS)

npu = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0,
                            get_device_name=lambda i=0: "mock NPU (CPU)", synchronize=lambda *a: None)
torch.npu = npu
