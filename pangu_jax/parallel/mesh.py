"""The device mesh and the sharding rules for parameters, optimiser state and activations.

Mesh axes, outermost first (our layout; the paper's devices are laid out the same way, tensor innermost so that
TP collectives stay on the fastest links):

  data         data parallelism (replicas of everything but the batch)
  stage        pipeline stages
  expert_node  the inter-node part of expert parallelism
  expert       the intra-node part of expert parallelism
  tensor       tensor parallelism

`config.parallel.expert` = ep is split as ep = expert_node x expert, with `expert` the largest divisor of ep
such that expert x tensor devices fit in one node (`devices_per_node`). An expert-parallel (EP) group is one
(data, stage) slice: the devices along (expert_node, expert), plus `tensor` when TP-extend-EP is on. With every EP
device on one node, expert_node = 1 and hierarchical all-to-all degenerates to the flat one.

Sharding (by parameter path; see `param_spec`): routed experts are split over the EP axes along their expert dim
(and over `tensor` too with TP-extend-EP; otherwise `tensor` splits w_out's ffn dim and w_in is replicated over
tensor, so that the fused gate|up layout needs no reshuffle); other matrices split one dim over `tensor` when it
divides; the batch is split over (data, expert_node, expert). The optimiser state takes its parameter's sharding.
Everything runs under one `jax.jit`: GSPMD inserts the collectives for the dense parts; the routed experts run
under `shard_map` with an explicit token exchange (`expert_parallel.py`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from confspec import ConfigError

AXES = ("data", "stage", "expert_node", "expert", "tensor")
EP_AXES = ("expert_node", "expert")
BATCH_AXES = ("data", "expert_node", "expert")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Sizes of the mesh axes, derived from `config.parallel`."""

  data: int
  stage: int
  expert_node: int
  expert: int
  tensor: int
  tp_extend_ep: bool = False
  hier_a2a: bool = True

  @property
  def shape(self) -> tuple[int, ...]:
    return (self.data, self.stage, self.expert_node, self.expert, self.tensor)

  @property
  def num_devices(self) -> int:
    return math.prod(self.shape)

  @property
  def ep(self) -> int:
    return self.expert_node * self.expert

  @property
  def expert_shards(self) -> int:
    """How many devices split the routed experts of one layer."""
    return self.ep * (self.tensor if self.tp_extend_ep else 1)

  @property
  def expert_axes(self) -> tuple[str, ...]:
    return EP_AXES + (("tensor",) if self.tp_extend_ep else ())

  @property
  def batch_shards(self) -> int:
    return self.data * self.ep


def layout_from_config(pcfg) -> Layout:
  """The mesh layout for `config.parallel` (ep split into inter- and intra-node parts by devices_per_node)."""
  ep, tp = pcfg.expert, pcfg.tensor
  per_node = max(1, pcfg.devices_per_node // tp)
  intra = max(d for d in range(1, ep + 1) if ep % d == 0 and d <= per_node)
  return Layout(data=pcfg.data, stage=pcfg.stage, expert_node=ep // intra, expert=intra, tensor=tp,
                tp_extend_ep=bool(pcfg.tp_extend_ep), hier_a2a=bool(pcfg.hier_a2a))


def check_fits(cfg, layout: Layout, num_devices: int | None = None) -> None:
  """Clear errors for plans the devices or the model cannot take (before anything compiles)."""
  n = jax.device_count() if num_devices is None else num_devices
  if layout.num_devices != n:
    raise ConfigError(f"config.parallel: data x stage x expert x tensor = {' x '.join(map(str, layout.shape))} = "
                      f"{layout.num_devices} devices, but {n} are available (on CPU, simulate more with "
                      f"XLA_FLAGS=--xla_force_host_platform_device_count={layout.num_devices})")
  e = cfg.model.num_routed_experts
  if e % layout.expert_shards:
    raise ConfigError(f"config.model.num_routed_experts: {e} must be divisible by the {layout.expert_shards} devices "
                      "that split the experts (config.parallel.expert, x tensor with tp_extend_ep)")
  b = cfg.train.batch_size
  if b % layout.batch_shards:
    raise ConfigError(f"config.train.batch_size: {b} must be divisible by data x expert = {layout.batch_shards}")
  if layout.tp_extend_ep and (b // layout.batch_shards * cfg.train.seq_len) % layout.tensor:
    raise ConfigError("config.train.seq_len: tokens per device must be divisible by config.parallel.tensor "
                      "(TP-extend-EP splits each device's tokens over the tensor axis)")


def make_mesh(layout: Layout, devices=None) -> Mesh:
  devs = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devs.reshape(layout.shape), AXES)


def _divides(n: int, k: int) -> bool:
  return k > 1 and n % k == 0


def param_spec(path: tuple, shape: tuple[int, ...], layout: Layout) -> P:
  """PartitionSpec of one parameter, from its path (names) and shape. Stacked layers keep dim 0 unsplit."""
  names = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
  tp = layout.tensor
  spec: list = [None] * len(shape)
  if layout.stage > 1 and names[0] == "moe_layers":
    spec[0] = "stage"  # the pipelined stack: contiguous layers per stage
  if "experts" in names:  # (stack, E, d_in, d_out)
    spec[1] = layout.expert_axes
    if not layout.tp_extend_ep and names[-1] == "w_out" and _divides(shape[2], tp):
      spec[2] = "tensor"
    return P(*spec)
  if len(shape) <= 1 or tp == 1:
    return P(*spec)
  if names[-1] == "embed" and _divides(shape[0], tp):
    spec[0] = "tensor"
  elif names[-1] in ("w_out", "o", "proj") and len(shape) >= 2 and _divides(shape[-2], tp):
    spec[-2] = "tensor"  # row-parallel
  elif len(shape) >= 2 and names[-1] not in ("router",) and _divides(shape[-1], tp):
    spec[-1] = "tensor"  # column-parallel
  return P(*spec)


def param_shardings(abstract_params, mesh: Mesh, layout: Layout):
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: NamedSharding(mesh, param_spec(path, leaf.shape, layout)), abstract_params)


def state_shardings(abstract_state, mesh: Mesh, layout: Layout):
  """Train-state shardings: params by `param_spec`; optimiser moments like their parameter; scalars replicated.

  Optimiser leaves are matched to parameters by path suffix (optax keeps the parameter tree inside each moment)."""
  by_path = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state["params"]):
    by_path[_names(path)] = param_spec(path, leaf.shape, layout)

  def one(path, leaf):
    names = _names(path)
    for i in range(len(names)):
      spec = by_path.get(names[i:])
      if spec is not None and len(spec) == len(leaf.shape):
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(one, abstract_state)


def _names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Token batches (B, S+1): sequences split over data and the EP axes."""
  return NamedSharding(mesh, P(BATCH_AXES, None))
