"""Pangu Ultra MoE: a functional JAX reference, its trainer and its simulator."""
