"""One object with everything a train step needs: mesh, layout, shardings, the MoE dispatch.

There is always a mesh: on one device every axis has size 1 and the same code runs (every sharding is then
trivially replicated); `setup` is the one way to get it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from pangu_jax.model import transformer
from pangu_jax.parallel import mesh as mesh_lib
from pangu_jax.parallel.expert_parallel import make_dispatch
from pangu_jax.parallel.pipeline import check_pipeline
from pangu_jax.train.state import train_state_shapes


class Parallel(NamedTuple):
  mesh: Any
  layout: mesh_lib.Layout
  state_shardings: Any  # pytree of NamedSharding, like the train state
  batch_sharding: Any
  dispatch: Any  # the MoE dispatch (None: the single-device one, partitioned by GSPMD)


def setup(cfg, devices=None) -> Parallel:
  """Mesh and shardings for `config.parallel` (clear errors when the devices or shapes do not fit).

  `devices`: the mesh's devices (default: all of them; this process's first one when the layout has one device,
  so that a one-device run also works in a process that sees several)."""
  layout = mesh_lib.layout_from_config(cfg.parallel)
  if devices is None:
    devices = jax.devices() if layout.num_devices > 1 else jax.local_devices()[:1]
  mesh_lib.check_fits(cfg, layout, len(devices))
  if layout.stage > 1:
    check_pipeline(cfg, layout)  # its errors say more than a layer stack that `stage` does not divide
  mesh = mesh_lib.make_mesh(layout, devices)
  shapes = train_state_shapes(cfg)
  params = mesh_lib.param_shardings(transformer.param_axes(cfg.model), shapes["params"], mesh, layout)
  dispatch = None
  # Also under pure data parallelism: GSPMD cannot split the single-device MoE's token sort along a sharded batch,
  # so it gathered every replica's tokens and ran all routed experts on the global batch on every device (8x the
  # expert FLOPs at data=8, measured in the compiled step's cost analysis); under shard_map each device routes its
  # own tokens (the exchange over a one-device EP group is a no-op). Only for the dropless dispatch, which is what
  # the shard_map one computes; `capacity` / `dense` under pure data parallelism keep their own semantics. On one
  # device the single-device dispatch runs as it is (the exchange would only add copies).
  pure_dp = layout.batch_shards > 1 and cfg.model.moe_impl == "dropless"
  if layout.expert_shards > 1 or layout.tensor > 1 or pure_dp:
    dispatch = make_dispatch(mesh, layout, cfg.model.num_routed_experts)
  return Parallel(mesh=mesh, layout=layout, state_shardings=mesh_lib.state_shardings(shapes, params, mesh),
                  batch_sharding=mesh_lib.batch_sharding(mesh), dispatch=dispatch)


def put_batch(par: Parallel, batch: np.ndarray) -> jax.Array:
  """A host batch (identical on every process) -> a global array sharded over the batch axes.

  Each process supplies only its addressable shards, so this also works across hosts."""
  batch = np.asarray(batch)
  return jax.make_array_from_callback(batch.shape, par.batch_sharding, lambda idx: batch[idx])
