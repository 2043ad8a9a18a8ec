"""JAX function -> jaxpr -> a flat, serialisable graph of primitive calls (our IR).

The IR is a list of nodes, each one JAX primitive with its operands (references
to earlier nodes' outputs), its parameters (JSON), its `scope` (the equation's
`jax.named_scope` stack, which marks model regions such as `rms_norm`,
`rotary`, `moe_gating_top_k`, `grouped_matmul`) and its source line. Nested
jaxprs are resolved at export time:
  jit / pjit / closed_call / remat, custom_jvp_call, custom_vjp_call  -> inlined (the primal computation);
  scan  -> unrolled, `length` copies of the body (its scope gains `scan<k>[i]`, e.g. the layer index);
  cond  -> every branch emitted, outputs selected by the branch index (pure branches, so same values);
  while -> one `_while` node carrying its condition and body as nested IR graphs.
Anything else not in the torch primitive table (runtime/primitives.py) stops the export with an error naming the
primitive and the user source line that produced it.

The torch side (npu_backend.runtime) turns the IR into a torch.fx GraphModule.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax
import jax.extend as jex
import numpy as np

from npu_backend.runtime.primitives import MULTI_OUTPUT, OPS
from pangu_jax.model.regions import parse_tag

INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "remat": "jaxpr", "checkpoint": "jaxpr", "custom_jvp_call": "call_jaxpr",
          "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr", "custom_lin": None}
STRUCTURAL = {"scan", "cond", "while"}  # plus named regions: jit equations tagged by pangu_jax.model.regions
DROP_PARAMS = {"sharding", "out_sharding", "precision", "accumulation_type", "unique_indices", "indices_are_sorted",
               "update_jaxpr", "update_consts", "weak_type", "algorithm", "transpose_algorithm", "accuracy"}


class UnsupportedPrimitive(NotImplementedError):
  """An equation whose primitive has no torch translation (names the primitive and the source line)."""


def supported_primitives() -> list[str]:
  return sorted(set(OPS) | set(INLINE) | STRUCTURAL)


def _source(eqn) -> str:
  try:
    from jax._src import source_info_util  # noqa: PLC0415 (no public API for the user frame)

    frame = source_info_util.user_frame(eqn.source_info.traceback)
    if frame is not None:
      return f"{frame.file_name}:{frame.start_line}"
  except Exception:  # noqa: BLE001
    pass
  return "<unknown>"


def _jsonable(v: Any) -> Any:
  if v is None or isinstance(v, bool | int | float | str):
    return v
  if isinstance(v, np.dtype) or (isinstance(v, type) and issubclass(v, np.generic)):
    return np.dtype(v).name
  if hasattr(v, "dtype") and hasattr(v, "name") and type(v).__name__.endswith("DType"):
    return np.dtype(v).name
  if isinstance(v, enum.Enum):
    return v.name
  if isinstance(v, np.generic):
    return v.item()
  if hasattr(v, "_asdict"):
    return {k: _jsonable(x) for k, x in v._asdict().items()}
  if dataclasses.is_dataclass(v):
    return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
  if isinstance(v, list | tuple):
    return [_jsonable(x) for x in v]
  try:
    return np.dtype(v).name
  except TypeError:
    pass
  return str(v)


@dataclasses.dataclass
class Graph:
  """The exported IR: nodes in execution order, plus tensors (weights and array constants) by name."""

  nodes: list[dict]
  inputs: list[dict]
  outputs: list[int]
  weights: list[str]
  tensors: dict[str, np.ndarray]

  def to_json(self) -> dict:
    return {"format": "npu_backend.ir/1", "nodes": self.nodes, "inputs": self.inputs, "outputs": self.outputs,
            "weights": self.weights}


class _Builder:
  def __init__(self, tensors: dict[str, np.ndarray]):
    self.nodes: list[dict] = []
    self.tensors = tensors
    self.next_id = 0
    self.const_names: dict[int, str] = {}
    self.const_keepalive: list = []

  def add(self, op: str, args: list[int], params: dict, n_out: int, scope: str = "", source: str = "") -> list[int]:
    outs = list(range(self.next_id, self.next_id + n_out))
    self.next_id += n_out
    self.nodes.append({"op": op, "args": args, "params": params, "outs": outs, "scope": scope, "source": source})
    return outs

  def constant(self, value, dtype) -> int:
    return self.add("_constant", [], {"value": np.asarray(value).item(), "dtype": np.dtype(dtype).name}, 1)[0]

  def tensor(self, array) -> int:
    """A node reading an array constant; one stored copy per constant however often it is emitted (unrolled
    scans emit a body's constants once per iteration)."""
    name = self.const_names.get(id(array))
    if name is None:
      name = f"const_{len(self.tensors)}"
      self.tensors[name] = np.asarray(array)
      self.const_names[id(array)] = name
      self.const_keepalive.append(array)  # ids stay unique while the builder lives
    return self.add("_tensor", [], {"name": name}, 1)[0]

  def emit(self, jaxpr, const_refs, in_refs, prefix: str = "", where: str = "<unknown>") -> list[int]:
    """Emits a jaxpr's equations. `where`: the user source line of the enclosing call, for nested equations
    (inside jnp's own jitted functions) that have no user frame of their own."""
    env = {}
    for v, r in zip(jaxpr.constvars, const_refs):
      env[v] = r
    for v, r in zip(jaxpr.invars, in_refs):
      env[v] = r

    def read(a):
      if isinstance(a, jex.core.Literal):
        return self.constant(a.val, a.aval.dtype)
      return env[a]

    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      ins = [read(a) for a in eqn.invars]
      scope = prefix + str(eqn.source_info.name_stack)
      src = _source(eqn)
      src = where if src == "<unknown>" else src
      region = parse_tag(str(eqn.params.get("name", ""))) if name in ("jit", "pjit") else None
      if region is not None:
        outs = self._region(eqn, ins, region, scope, src)
      elif name in INLINE and INLINE[name] and INLINE[name] in eqn.params:
        sub = eqn.params[INLINE[name]]
        outs = self.emit_closed(sub, ins, prefix, src)
      elif name == "scan":
        outs = self._scan(eqn, ins, scope)
      elif name == "cond":
        outs = self._cond(eqn, ins, prefix)
      elif name == "while":
        outs = self._while(eqn, ins, scope)
      elif name in OPS:
        params = {k: _jsonable(v) for k, v in eqn.params.items() if k not in DROP_PARAMS}
        n_out = len(eqn.outvars) if name in MULTI_OUTPUT or len(eqn.outvars) > 1 else 1
        outs = self.add(name, ins, params, n_out, scope, src)
      else:
        raise UnsupportedPrimitive(
            f"unsupported primitive '{name}' at {src} (scope '{scope}'); no torch translation exists. "
            f"Supported: {', '.join(supported_primitives())}")
      for v, r in zip(eqn.outvars, outs):
        if type(v).__name__ != "DropVar":  # jax.extend exposes no DropVar
          env[v] = r
    return [read(a) for a in jaxpr.outvars]

  def emit_closed(self, closed, ins, prefix, where="<unknown>"):
    if isinstance(closed, jex.core.ClosedJaxpr):
      consts = [self.tensor(c) if np.ndim(c) else self.constant(c, np.asarray(c).dtype) for c in closed.consts]
      return self.emit(closed.jaxpr, consts, ins, prefix, where)
    return self.emit(closed, [], ins, prefix, where)

  def _subgraph(self, closed, n_in: int, where: str) -> dict:
    b = _Builder(self.tensors)
    in_refs = b.add("_inputs", [], {"n": n_in}, n_in)
    outs = b.emit_closed(closed, in_refs, "", where)
    return {"nodes": b.nodes, "outputs": outs}

  def _region(self, eqn, ins, region, scope, src):
    """A named model region (pangu_jax.model.regions): one node holding its decomposition as a subgraph."""
    name, statics = region
    sub = self._subgraph(eqn.params["jaxpr"], len(ins), src)
    return self.add("_region", ins, {"name": name, "statics": statics, "graph": sub}, len(eqn.outvars), scope, src)

  def _scan(self, eqn, ins, scope):
    p = eqn.params
    nc, ncar, length = p["num_consts"], p["num_carry"], p["length"]
    consts, carry, xs = ins[:nc], ins[nc : nc + ncar], ins[nc + ncar :]
    ys_per_iter = []
    depth = scope.count("scan")
    order = range(length - 1, -1, -1) if p["reverse"] else range(length)
    for i in order:
      x_i = [self.add("_index", [x], {"i": i}, 1)[0] for x in xs]
      outs = self.emit_closed(p["jaxpr"], consts + carry + x_i, f"{scope}/scan{depth}[{i}]/")
      carry, ys = outs[:ncar], outs[ncar:]
      ys_per_iter.append(ys)
    if p["reverse"]:
      ys_per_iter.reverse()
    n_ys = len(eqn.outvars) - ncar
    stacked = [self.add("_stack", [it[j] for it in ys_per_iter], {}, 1)[0] for j in range(n_ys)]
    return carry + stacked

  def _cond(self, eqn, ins, prefix):
    index, ops = ins[0], ins[1:]
    branch_outs = [self.emit_closed(br, ops, prefix) for br in eqn.params["branches"]]
    if len(branch_outs) == 1:
      return branch_outs[0]
    return [self.add("select_n", [index] + [b[j] for b in branch_outs], {}, 1)[0] for j in range(len(eqn.outvars))]

  def _while(self, eqn, ins, scope):
    p = eqn.params
    sub = {key: self._subgraph(p[key], len(p[key].jaxpr.invars), _source(eqn)) for key in ("cond_jaxpr", "body_jaxpr")}
    params = {"cond": sub["cond_jaxpr"], "body": sub["body_jaxpr"], "cond_nconsts": p["cond_nconsts"],
              "body_nconsts": p["body_nconsts"]}
    return self.add("_while", ins, params, len(eqn.outvars), scope, _source(eqn))


def _weight_name(path) -> str:
  parts = []
  for k in path:
    parts.append(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))))
  return ".".join(parts)


def export_function(fn, params, *example_inputs) -> Graph:
  """Traces fn(params, *inputs) and returns its IR. `params` (a pytree) become named weights; `inputs` arrays."""
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [_weight_name(p) for p, _ in leaves_with_path]
  leaves = [leaf for _, leaf in leaves_with_path]
  flat_inputs = [np.asarray(x) for x in example_inputs]

  def flat_fn(ws, ins):
    return jax.tree.leaves(fn(jax.tree_util.tree_unflatten(treedef, ws), *ins))

  closed = jax.make_jaxpr(flat_fn)(leaves, flat_inputs)
  tensors = {n: np.asarray(w) for n, w in zip(names, leaves)}
  b = _Builder(tensors)
  weight_refs = [b.add("_weight", [], {"name": n}, 1)[0] for n in names]
  input_refs = [b.add("_input", [], {"index": i}, 1)[0] for i in range(len(flat_inputs))]
  outs = b.emit_closed(closed, weight_refs + input_refs, "")
  inputs = [{"shape": list(x.shape), "dtype": x.dtype.name} for x in flat_inputs]
  return Graph(nodes=b.nodes, inputs=inputs, outputs=outs, weights=names, tensors=b.tensors)
