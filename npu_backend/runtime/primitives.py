"""Torch implementations of the JAX primitives the exported graphs use (one function per primitive).

Each function takes the primitive's operands as tensors and its parameters as
keywords (JSON-serialisable: dimension numbers as dicts, dtypes as strings) and
follows XLA's semantics: integer division truncates, `rem` is C's remainder,
`top_k` breaks ties towards the lower index, gathers clamp or fill out-of-bounds
indices as their `mode` says, scatters drop out-of-bounds updates.

This module imports torch only: exported graphs run where JAX is not installed.
"""

from __future__ import annotations

import math
import string

import torch

DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16,
    "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8,
    "uint32": torch.uint32, "bool": torch.bool,
}


def _dt(name: str) -> torch.dtype:
  return DTYPES[name]


def _is_int(t: torch.Tensor) -> bool:
  return not t.dtype.is_floating_point and t.dtype != torch.bool


# ----------------------------------------------------------------------------- elementwise


def div(x, y):
  if _is_int(x):
    return torch.div(x, y, rounding_mode="trunc")
  return x / y


def rem(x, y):
  return torch.fmod(x, y)


def pow_(x, y):
  return torch.pow(x, y)


def integer_pow(x, *, y):
  return x**y


def select_n(which, *cases):
  if which.dtype == torch.bool:
    return torch.where(which, cases[1], cases[0]) if len(cases) == 2 else cases[0]
  out = cases[0]
  for i, c in enumerate(cases[1:], start=1):
    out = torch.where(which == i, c, out)
  return out


def clamp(lo, x, hi):
  return torch.minimum(torch.maximum(x, lo), hi)


def convert_element_type(x, *, new_dtype):
  return x.to(_dt(new_dtype))


def logistic(x):
  return torch.sigmoid(x)


def rsqrt(x):
  return torch.rsqrt(x)


def identity(x, **_):
  return x


ELEMENTWISE = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": div, "rem": rem, "pow": pow_, "neg": torch.neg,
    "exp": torch.exp, "exp2": torch.exp2, "log": torch.log, "log1p": torch.log1p, "tanh": torch.tanh,
    "logistic": logistic, "sqrt": torch.sqrt, "rsqrt": rsqrt, "max": torch.maximum, "min": torch.minimum,
    "abs": torch.abs, "sign": torch.sign, "floor": torch.floor, "ceil": torch.ceil, "erf": torch.erf,
    "sin": torch.sin, "cos": torch.cos, "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le,
    "gt": torch.gt, "ge": torch.ge, "lt_to": torch.lt, "le_to": torch.le, "and": torch.bitwise_and,
    "or": torch.bitwise_or, "xor": torch.bitwise_xor, "not": torch.bitwise_not, "square": torch.square,
    "is_finite": torch.isfinite, "select_n": select_n, "clamp": clamp, "integer_pow": integer_pow,
    "convert_element_type": convert_element_type, "stop_gradient": identity, "copy": identity, "copy_p": identity,
    "reduce_precision": identity, "optimization_barrier": lambda *xs: xs if len(xs) > 1 else xs[0],
}


def round_(x, *, rounding_method=0):
  return torch.round(x) if str(rounding_method) in ("1", "TO_NEAREST_EVEN") else torch.sign(x) * torch.floor(
      torch.abs(x) + 0.5)


# ----------------------------------------------------------------------------- shapes


def broadcast_in_dim(x, *, shape, broadcast_dimensions, **_):
  view = [1] * len(shape)
  for src, dst in enumerate(broadcast_dimensions):
    view[dst] = x.shape[src]
  return x.reshape(view).expand(*shape)


def reshape(x, *, new_sizes, dimensions=None, **_):
  if dimensions is not None:
    x = x.permute(*dimensions)
  return x.reshape(new_sizes)


def squeeze(x, *, dimensions):
  return x.reshape([s for i, s in enumerate(x.shape) if i not in set(dimensions)])


def expand_dims(x, *, dimensions):
  for d in sorted(dimensions):
    x = x.unsqueeze(d)
  return x


def transpose(x, *, permutation):
  return x.permute(*permutation)


def slice_(x, *, start_indices, limit_indices, strides=None):
  idx = tuple(slice(s, e, st) for s, e, st in zip(start_indices, limit_indices, strides or [1] * x.ndim))
  return x[idx]


def _clamped_start(s, limit: int):
  """JAX's start clamping, [0, limit]; a Python int eagerly, a 0-d tensor under torch.compile (no .item() break)."""
  if torch.compiler.is_compiling():
    return torch.clamp(torch.as_tensor(s), 0, limit)
  return int(torch.clamp(torch.as_tensor(s), 0, limit))


def _window(s, size: int, d: int, ndim: int, device):
  """Indices s .. s+size-1 along dim d, shaped to broadcast against the other dims (for compiled graphs)."""
  shape = [1] * ndim
  shape[d] = size
  return (s.to(device) + torch.arange(size, device=device)).reshape(shape)


def dynamic_slice(x, *starts, slice_sizes):
  if torch.compiler.is_compiling():  # index tensors: the start stays a tensor, so the graph does not break
    out = x
    for d, (s, size) in enumerate(zip(starts, slice_sizes)):
      if size != x.shape[d]:
        idx = _clamped_start(s, x.shape[d] - size).to(x.device) + torch.arange(size, device=x.device)
        out = out.index_select(d, idx)
    return out
  out = x
  for d, (s, size) in enumerate(zip(starts, slice_sizes)):
    s = _clamped_start(s, x.shape[d] - size)
    out = out.narrow(d, s, size)
  return out


def dynamic_update_slice(x, update, *starts):
  if torch.compiler.is_compiling():
    idx = tuple(_window(_clamped_start(s, x.shape[d] - update.shape[d]), update.shape[d], d, x.ndim, x.device)
                for d, s in enumerate(starts))
    return x.index_put(idx, update)
  out = x.clone()
  idx = []
  for d, s in enumerate(starts):
    s = _clamped_start(s, x.shape[d] - update.shape[d])
    idx.append(slice(s, s + update.shape[d]))
  out[tuple(idx)] = update
  return out


def concatenate(*xs, dimension):
  return torch.cat(xs, dim=dimension)


def pad(x, padval, *, padding_config):
  out = x
  for d, (lo, hi, interior) in enumerate(padding_config):
    if interior:
      raise NotImplementedError("pad with interior padding")
    if lo < 0:
      out = out.narrow(d, -lo, out.shape[d] + lo)
      lo = 0
    if hi < 0:
      out = out.narrow(d, 0, out.shape[d] + hi)
      hi = 0
    shape_lo = list(out.shape)
    shape_lo[d] = lo
    shape_hi = list(out.shape)
    shape_hi[d] = hi
    out = torch.cat([padval.expand(shape_lo).to(out.dtype), out, padval.expand(shape_hi).to(out.dtype)], dim=d)
  return out


def iota(*, dtype, shape, dimension, device=None, **_):
  view = [1] * len(shape)
  view[dimension] = shape[dimension]
  return torch.arange(shape[dimension], dtype=_dt(dtype), device=device).reshape(view).expand(*shape)


def tile(x, *, reps):
  return torch.tile(x, tuple(reps))


def split(x, *, sizes, axis):
  return tuple(torch.split(x, list(sizes), dim=axis))


def rev(x, *, dimensions):
  return torch.flip(x, dims=tuple(dimensions))


# ----------------------------------------------------------------------------- reductions


def _reduce(fn):
  def op(x, *, axes, **_):
    if not axes:
      return x
    return fn(x, tuple(axes))

  return op


def _one_axis_at_a_time(fn):
  def reduce(x, axes):
    for a in sorted(axes, reverse=True):
      x = fn(x, a)
    return x

  return reduce


REDUCTIONS = {
    "reduce_sum": _reduce(lambda x, a: torch.sum(x, dim=a).to(x.dtype)),
    "reduce_max": _reduce(lambda x, a: torch.amax(x, dim=a)),
    "reduce_min": _reduce(lambda x, a: torch.amin(x, dim=a)),
    "reduce_prod": _reduce(_one_axis_at_a_time(lambda x, a: torch.prod(x, dim=a).to(x.dtype))),
    "reduce_and": _reduce(_one_axis_at_a_time(lambda x, a: torch.all(x, dim=a))),
    "reduce_or": _reduce(_one_axis_at_a_time(lambda x, a: torch.any(x, dim=a))),
}


def argmax(x, *, axes, index_dtype):
  return torch.argmax(x, dim=axes[0]).to(_dt(index_dtype))


def argmin(x, *, axes, index_dtype):
  return torch.argmin(x, dim=axes[0]).to(_dt(index_dtype))


def cumulative(fn):
  def op(x, *, axis, reverse=False):
    if reverse:
      x = torch.flip(x, (axis,))
    out = fn(x, axis)
    if reverse:
      out = torch.flip(out, (axis,))
    return out.to(x.dtype)

  return op


CUMULATIVE = {
    "cumsum": cumulative(lambda x, a: torch.cumsum(x, dim=a)),
    "cumprod": cumulative(lambda x, a: torch.cumprod(x, dim=a)),
    "cummax": cumulative(lambda x, a: torch.cummax(x, dim=a).values),
    "cummin": cumulative(lambda x, a: torch.cummin(x, dim=a).values),
}


# ----------------------------------------------------------------------------- contractions, sorting


def dot_general(lhs, rhs, *, dimension_numbers, preferred_element_type=None, **_):
  (lc, rc), (lb, rb) = dimension_numbers
  letters = iter(string.ascii_letters)
  lsub, rsub = [None] * lhs.ndim, [None] * rhs.ndim
  batch = []
  for a, b in zip(lb, rb):
    lsub[a] = rsub[b] = c = next(letters)
    batch.append(c)
  for a, b in zip(lc, rc):
    lsub[a] = rsub[b] = next(letters)
  lfree = [lsub.__setitem__(i, next(letters)) or lsub[i] for i in range(lhs.ndim) if lsub[i] is None]
  rfree = [rsub.__setitem__(i, next(letters)) or rsub[i] for i in range(rhs.ndim) if rsub[i] is None]
  out_dtype = _dt(preferred_element_type) if preferred_element_type else lhs.dtype
  if _is_int(lhs) or lhs.dtype == torch.bool:
    lhs, rhs = lhs.to(torch.int64), rhs.to(torch.int64)
  elif out_dtype.is_floating_point and out_dtype.itemsize > max(lhs.dtype.itemsize, rhs.dtype.itemsize):
    lhs, rhs = lhs.to(out_dtype), rhs.to(out_dtype)  # XLA returns the wide result unrounded
  elif lhs.dtype != rhs.dtype:
    common = torch.promote_types(lhs.dtype, rhs.dtype)
    lhs, rhs = lhs.to(common), rhs.to(common)
  spec = f"{''.join(lsub)},{''.join(rsub)}->{''.join(batch + lfree + rfree)}"
  return torch.einsum(spec, lhs, rhs).to(out_dtype)


def sort(*operands, dimension, is_stable=True, num_keys=1):
  perm = None
  for key in reversed(operands[:num_keys]):  # least significant key first, stable sorts
    k = key if perm is None else torch.gather(key, dimension, perm)
    p = torch.sort(k, dim=dimension, stable=True).indices
    perm = p if perm is None else torch.gather(perm, dimension, p)
  return tuple(torch.gather(x, dimension, perm) for x in operands)


def top_k(x, *, k, axis=-1, **_):
  """Largest k along `axis`, ties to the lower index (XLA's order)."""
  srt = torch.sort(x, dim=axis, descending=True, stable=True)
  return srt.values.narrow(axis, 0, k), srt.indices.narrow(axis, 0, k).to(torch.int32)


# ----------------------------------------------------------------------------- gather / scatter


def _fill_default(dtype):
  if dtype.is_floating_point:
    return math.nan
  if dtype == torch.bool:
    return True
  return torch.iinfo(dtype).min if dtype.is_signed else torch.iinfo(dtype).max


def gather(operand, indices, *, dimension_numbers, slice_sizes, mode, fill_value=None, **_):
  """XLA gather (index vector in the last dimension of `indices`, as JAX emits it)."""
  dn = dimension_numbers
  offset_dims, collapsed = dn["offset_dims"], dn["collapsed_slice_dims"]
  start_map = dn["start_index_map"]
  op_batch, idx_batch = dn.get("operand_batching_dims", []), dn.get("start_indices_batching_dims", [])
  batch_shape = list(indices.shape[:-1])
  nb = len(batch_shape)
  fill = "FILL" in str(mode).upper()
  dev = operand.device
  oob = torch.zeros(batch_shape, dtype=torch.bool, device=dev)
  idx = []
  for d in range(operand.ndim):
    size = slice_sizes[d]
    if d in start_map:
      start = indices[..., start_map.index(d)].to(torch.int64)
      hi = operand.shape[d] - size
      if fill:
        oob |= (start < 0) | (start > hi)
      start = start.clamp(0, max(hi, 0))
    elif d in op_batch:
      b = idx_batch[op_batch.index(d)]
      view = [1] * nb
      view[b] = batch_shape[b]
      start = torch.arange(batch_shape[b], device=dev).reshape(view).expand(batch_shape)
    else:
      start = torch.zeros(batch_shape, dtype=torch.int64, device=dev)
    full = start.reshape(batch_shape + [1] * operand.ndim)
    view = [1] * (nb + operand.ndim)
    view[nb + d] = size
    idx.append(full + torch.arange(size, device=dev).reshape(view))
  res = operand[tuple(idx)]  # batch_shape + slice_sizes
  if fill:
    fv = _fill_default(operand.dtype) if fill_value is None else fill_value
    fill_t = torch.tensor(fv, dtype=operand.dtype, device=dev)
    res = torch.where(oob.reshape(batch_shape + [1] * operand.ndim), fill_t, res)
  drop = sorted(set(collapsed) | set(op_batch))
  res = res.reshape(batch_shape + [s for d, s in enumerate(slice_sizes) if d not in drop])
  n_off = len(offset_dims)
  rank = nb + n_off
  perm, bi, oi = [], 0, 0
  for pos in range(rank):
    if pos in offset_dims:
      perm.append(nb + oi)
      oi += 1
    else:
      perm.append(bi)
      bi += 1
  return res.permute(*perm)


def _scatter(operand, indices, updates, dn, mode, accumulate):
  win_dims = dn["update_window_dims"]
  inserted = dn["inserted_window_dims"]
  to_operand = dn["scatter_dims_to_operand_dims"]
  op_batch, idx_batch = dn.get("operand_batching_dims", []), dn.get("scatter_indices_batching_dims", [])
  scatter_axes = [a for a in range(updates.ndim) if a not in win_dims]
  window_operand_dims = [d for d in range(operand.ndim) if d not in set(inserted) | set(op_batch)]
  ushape = list(updates.shape)
  full = []
  dev = operand.device
  valid = torch.ones(ushape, dtype=torch.bool, device=dev)

  def along(axis, n):
    view = [1] * len(ushape)
    view[axis] = n
    return torch.arange(n, device=dev).reshape(view)

  def over_scatter_axes(t):  # t has the indices' batch shape; place it on the updates' scatter axes
    view = [1] * len(ushape)
    for i, a in enumerate(scatter_axes):
      view[a] = t.shape[i]
    return t.reshape(view)

  for d in range(operand.ndim):
    pos = torch.zeros([1] * len(ushape), dtype=torch.int64, device=dev)
    if d in to_operand:
      pos = pos + over_scatter_axes(indices[..., to_operand.index(d)].to(torch.int64))
    if d in op_batch:
      b = idx_batch[op_batch.index(d)]
      pos = pos + along(scatter_axes[b], ushape[scatter_axes[b]])
    if d in window_operand_dims:
      pos = pos + along(win_dims[window_operand_dims.index(d)], ushape[win_dims[window_operand_dims.index(d)]])
    pos = pos.expand(ushape)
    if "CLIP" in str(mode).upper():
      pos = pos.clamp(0, operand.shape[d] - 1)
    valid &= (pos >= 0) & (pos < operand.shape[d])
    full.append(pos)
  flat = torch.zeros(ushape, dtype=torch.int64, device=dev)
  for d in range(operand.ndim):
    flat = flat * operand.shape[d] + full[d]
  # out-of-bounds updates go to one spare slot past the end, dropped after: no boolean mask, so the output shape
  # never depends on the data (torch.compile traces it without a graph break)
  n = operand.numel()
  sel = torch.where(valid, flat, n).reshape(-1)
  upd = updates.to(operand.dtype).expand(ushape).reshape(-1)
  out = torch.cat([operand.reshape(-1), operand.new_zeros(1)])
  out = out.index_add(0, sel, upd) if accumulate else out.index_put((sel,), upd)
  return out[:n].reshape(operand.shape)


def scatter(operand, indices, updates, *, dimension_numbers, mode, **_):
  return _scatter(operand, indices, updates, dimension_numbers, mode, accumulate=False)


def scatter_add(operand, indices, updates, *, dimension_numbers, mode, **_):
  return _scatter(operand, indices, updates, dimension_numbers, mode, accumulate=True)


# ----------------------------------------------------------------------------- the table

_WIDEN = {torch.uint32: torch.int64, torch.uint16: torch.int32}


def _drop_params(fn):
  """Ignores XLA-only parameters; computes unsigned types torch lacks kernels for in a wider signed type."""

  def op(*args, **_):
    narrow = next((a.dtype for a in args if isinstance(a, torch.Tensor) and a.dtype in _WIDEN), None)
    if narrow is None:
      return fn(*args)
    wide = [a.to(_WIDEN[narrow]) if isinstance(a, torch.Tensor) and a.dtype == narrow else a for a in args]
    out = fn(*wide)
    if out.dtype == _WIDEN[narrow]:
      out = (out & ((1 << (8 * narrow.itemsize)) - 1)).to(narrow)
    return out

  op.__name__ = getattr(fn, "__name__", "op")
  return op


OPS = {k: (v if k in ("convert_element_type", "integer_pow") else _drop_params(v)) for k, v in ELEMENTWISE.items()}
OPS.update(REDUCTIONS)
OPS.update(CUMULATIVE)
OPS.update({
    "round": round_, "broadcast_in_dim": broadcast_in_dim, "reshape": reshape, "squeeze": squeeze,
    "expand_dims": expand_dims, "transpose": transpose, "slice": slice_, "dynamic_slice": dynamic_slice,
    "dynamic_update_slice": dynamic_update_slice, "concatenate": concatenate, "pad": pad, "iota": iota,
    "tile": tile, "split": split, "rev": rev, "argmax": argmax, "argmin": argmin, "dot_general": dot_general,
    "sort": sort, "top_k": top_k, "gather": gather, "scatter": scatter, "scatter-add": scatter_add,
})
MULTI_OUTPUT = {"sort", "top_k", "split"}
