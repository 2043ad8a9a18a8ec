"""Named model regions: the units a backend may replace with a fused kernel.

`region(name, fn, **statics)(*args)` computes `fn(*args, **statics)` under
`jax.jit` with the function named `region__<name>__k=v...`. In every jaxpr the
region is then one `jit` equation whose inputs and outputs are exactly the
region's, whose name carries its static parameters, and whose body is the
portable decomposition. Unlike `jax.lax.composite` this has JVP and transpose
rules (jit is differentiable), and unlike a bare `named_scope` the region's
boundary (inputs, outputs, statics) is explicit, so the exporter
(npu_backend) can lower it to one Ascend op (`npu_rms_norm`, `npu_rotary_mul`,
`npu_swiglu`, `npu_moe_gating_top_k`, `npu_moe_init_routing_v2`,
`npu_grouped_matmul`, `npu_moe_finalize_routing`, `npu_fusion_attention`).
Inside an outer jit, XLA inlines the region: no cost.
"""

from __future__ import annotations

import functools

import jax

PREFIX = "region__"
_JITTED: dict = {}  # memo: (fn, tag) -> jitted callable (so a region is traced once per static setting)


def _fmt(v) -> str:
  return repr(v) if isinstance(v, float) else str(v)


def tag(name: str, statics: dict) -> str:
  return PREFIX + name + "".join(f"__{k}={_fmt(v)}" for k, v in sorted(statics.items()))


def parse_tag(text: str) -> tuple[str, dict] | None:
  """'region__rms_norm__eps=1e-05' -> ('rms_norm', {'eps': 1e-05}); None if not a region."""
  if not text.startswith(PREFIX):
    return None
  name, *pairs = text[len(PREFIX) :].split("__")
  statics = {}
  for p in pairs:
    k, v = p.split("=", 1)
    for conv in (int, float):
      try:
        statics[k] = conv(v)
        break
      except ValueError:
        continue
    else:
      statics[k] = {"True": True, "False": False}.get(v, v)
  return name, statics


def region(name: str, fn, **statics):
  key = (fn, tag(name, statics))
  if key not in _JITTED:
    call = functools.partial(fn, **statics)

    def wrapped(*args):
      with jax.named_scope(name):
        return call(*args)

    wrapped.__name__ = key[1]
    _JITTED[key] = jax.jit(wrapped)
  return _JITTED[key]
