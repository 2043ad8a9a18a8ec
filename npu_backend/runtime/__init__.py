"""Run exported graphs with torch alone (no JAX): primitive table (primitives.py), fx builder, save/load."""

from npu_backend.runtime.graph import ExportError, build_module, load, save

__all__ = ["ExportError", "build_module", "load", "save"]
