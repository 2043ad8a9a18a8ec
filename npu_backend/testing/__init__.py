"""Test support: a mock torch_npu (see mock_torch_npu/)."""

import os

MOCK_TORCH_NPU_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mock_torch_npu")
