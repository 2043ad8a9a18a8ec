"""Ascend fused ops: torch reference implementations with torch_npu's signatures, and the region lowering."""
