"""Dynamic expert placement: predict each expert's load, re-place experts across EP devices when it pays.

The model has no notion of an expert's identity beyond its slot on the expert axis: slot s of a layer lives on
EP device s // (E / n_devices). Moving expert i to slot s is therefore a permutation of that layer's expert axis
in every tensor that carries it (expert weights, router columns, router bias) and in the optimiser moments of
those tensors; the function the model computes is unchanged, and so is training (up to the order of
floating-point sums over experts).

Load predictor (the paper's): an exponential moving average of each slot's assignment count,
ema <- theta * ema + (1 - theta) * load, theta = 0.9, kept in the train state (`load_ema`, updated inside the train
step) so that a resumed run predicts exactly what an uninterrupted one would.

Re-placement (our definition of the paper's greedy step), every `placement_every` steps, per MoE layer: experts in
decreasing predicted load, each to the device with the least predicted load that still has a free slot (longest
processing time first). It is applied only when it lowers the coefficient of variation (std / mean) of predicted
device load by at least `placement_min_gain` (0.08), so that small gains do not pay for moving weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def device_loads(load: np.ndarray, n_devices: int) -> np.ndarray:
  """(L, E) per-slot loads -> (L, n) per-device loads (slot s on device s // (E / n))."""
  lyr, e = load.shape
  return load.reshape(lyr, n_devices, e // n_devices).sum(-1)


def cv(x: np.ndarray) -> np.ndarray:
  """Coefficient of variation over the last axis (0 for an all-zero row)."""
  m = x.mean(-1)
  return np.where(m > 0, x.std(-1) / np.maximum(m, 1e-12), 0.0)


def greedy_order(load: np.ndarray, n_devices: int) -> np.ndarray:
  """For one layer's per-expert load (E,), a slot order: new slot s holds old slot order[s].

  Longest-processing-time greedy onto n devices with E/n slots each; ties go to the lower device index."""
  e = load.shape[0]
  per = e // n_devices
  dev_load = np.zeros(n_devices)
  members: list[list[int]] = [[] for _ in range(n_devices)]
  for i in sorted(range(e), key=lambda i: (-load[i], i)):
    free = [d for d in range(n_devices) if len(members[d]) < per]
    d = min(free, key=lambda d: (dev_load[d], d))
    members[d].append(i)
    dev_load[d] += load[i]
  return np.array([i for d in range(n_devices) for i in sorted(members[d])], np.int32)


def plan(ema: np.ndarray, n_devices: int, min_gain: float):
  """(order (L, E) or None, report). `order` is None when no layer improves its CV by `min_gain`."""
  ema = np.asarray(ema, np.float64)
  before = cv(device_loads(ema, n_devices))
  order = np.stack([greedy_order(row, n_devices) for row in ema])
  moved = np.take_along_axis(ema, order, axis=1)
  after = cv(device_loads(moved, n_devices))
  gain = before - after
  apply = gain >= min_gain
  order = np.where(apply[:, None], order, np.arange(ema.shape[1])[None, :])
  report = {"cv_before": before.tolist(), "cv_after": np.where(apply, after, before).tolist(),
            "layers_moved": int(apply.sum()), "experts_moved": int((order != np.arange(ema.shape[1])).sum())}
  return (order if apply.any() else None), report


def _permute_leaf(path_names: tuple[str, ...], leaf, order):
  """Permutes the expert axis of one state leaf of the main model's MoE layers (others unchanged)."""
  if "moe_layers" not in path_names or "mtp" in path_names:
    return leaf
  name = path_names[-1]
  if "experts" in path_names:
    return jnp.take_along_axis(leaf, order.reshape(order.shape + (1,) * (leaf.ndim - 2)), axis=1)
  if name == "router":  # (L, d, E)
    return jnp.take_along_axis(leaf, order[:, None, :], axis=2)
  if name == "router_bias":  # (L, E)
    return jnp.take_along_axis(leaf, order, axis=1)
  return leaf


def _names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def permute_state(state: dict, order) -> dict:
  """The train state with every MoE layer's experts re-ordered (weights, router, optimiser moments, load EMA)."""
  order = jnp.asarray(order, jnp.int32)

  def one(path, leaf):
    names = _names(path)
    if names[-1] == "load_ema":
      return jnp.take_along_axis(leaf, order, axis=1)
    if not hasattr(leaf, "ndim") or leaf.ndim == 0:
      return leaf
    return _permute_leaf(names, leaf, order)

  return jax.tree_util.tree_map_with_path(one, state)


def make_permute(shardings):
  """A jitted `permute_state` (keeping the state's shardings, so the weights move between devices)."""
  return jax.jit(permute_state, donate_argnums=(0,), in_shardings=(shardings, None), out_shardings=shardings)
