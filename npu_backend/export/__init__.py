"""JAX -> IR -> torch.fx exporter (needs JAX)."""

from npu_backend.export.trace import Graph, UnsupportedPrimitive, export_function, supported_primitives

__all__ = ["Graph", "UnsupportedPrimitive", "export_function", "supported_primitives"]
