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

There is always a mesh: on one device every axis has size 1 and the trainer runs the same code.

Parameter sharding (our definitions): every parameter is created with a logical name per dim, declared where it
is initialised (`pangu_jax.model.init.Logical`; `transformer.param_axes` collects them), e.g. the embedding
("vocab", "embed"), a routed expert weight ("moe_layers", "experts", "expert_mlp", "embed"). One table, `RULES`,
maps each logical axis to the mesh axes that split it (None: replicated): `vocab`, `heads`, `kv_heads` (GQA's
key/value heads; `check_fits` asks that tp divide num_kv_heads, so each device holds whole heads), `mlp`, `expert_mlp`
(routed w_out's ffn dim), the latents as produced (`q_lora`, `kv_lora`) and `mtp_in` over `tensor`; `experts`
over the EP axes (with TP-extend-EP also over `tensor`, and `expert_mlp` whole: `rules`); `moe_layers` over
`stage`; the model width (norm gammas included), the router's expert dim and the rest replicated. A
parameter's sharding therefore never depends on its key, and a dim its mesh axes do not divide is an error naming
the parameter and the axis. Routed w_in keeps its fused gate|up dim whole (`expert_gate_up`): the EP dispatch
splits the gate and up halves over `tensor` itself.
The batch is split over (data, expert_node, expert); the optimiser moments take their parameter's sharding.
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
  m = cfg.model
  if getattr(m, "attention", "mla") == "gqa" and m.num_kv_heads % layout.tensor:
    raise ConfigError(f"config.model.num_kv_heads: {m.num_kv_heads} must be divisible by config.parallel.tensor "
                      f"({layout.tensor}): GQA shards whole key/value heads over tp")
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


# The rules table: logical axis (declared with each parameter where it is initialised, see
# `pangu_jax.model.init.Logical`) -> the mesh axes that split it (None: replicated). Our definitions.
RULES: dict[str, str | tuple[str, ...] | None] = {
    # stacks of blocks
    "moe_layers": "stage",  # the pipelined stack: contiguous MoE layers per stage
    "dense_layers": None,  # the dense-first layers run on stage 0
    "mtp_depth": None,  # the MTP modules run on the last stage
    # width and vocabulary
    "embed": None,  # the model width d (activations keep it whole; norm gammas over it are replicated)
    "vocab": "tensor",  # the embedding's rows and the head's columns
    # attention (MLA): the latents as produced (column-parallel q_a / kv_a, with their norms) and as consumed
    "q_lora": "tensor",
    "q_lora_in": None,
    "kv_lora": "tensor",  # kv_a's latent | rotary key columns, and the latent's norm
    "kv_lora_in": None,
    "heads": "tensor",  # heads x head dim: q_b / q / kv_b columns (column-parallel), o rows (row-parallel)
    "kv_heads": "tensor",  # GQA: key/value heads x head dim, k / v columns (column-parallel; check_fits: G % tp)
    # FFN: dense layers and shared experts
    "mlp": "tensor",  # the ffn dim: w_in's fused gate|up columns, w_out's rows
    "mtp_in": "tensor",  # the MTP projection's input [norm(h); norm(e)] (row-parallel)
    # routed experts and router
    "experts": EP_AXES,  # the expert index: one EP group holds all experts
    "expert_gate_up": None,  # routed w_in's fused gate|up dim (the EP dispatch splits gate and up halves itself)
    "expert_mlp": "tensor",  # routed w_out's ffn dim
    "router": None,  # the router's expert columns and the selection bias (every device routes its own tokens)
}


def rules(layout: Layout) -> dict:
  """`RULES` for one layout: with TP-extend-EP the tensor axis splits the set of experts instead of their ffn."""
  if layout.tp_extend_ep:
    return RULES | {"experts": EP_AXES + ("tensor",), "expert_mlp": None}
  return RULES


def logical_spec(name: str, shape: tuple[int, ...], axes: tuple[str, ...], layout: Layout) -> P:
  """The PartitionSpec of one parameter from its logical axes (mesh axes of size 1, which split nothing, are left
  out). A dim that its mesh axes do not divide is a ConfigError naming the parameter `name`."""
  table, sizes = rules(layout), dict(zip(AXES, layout.shape))
  if len(axes) != len(shape):
    raise ValueError(f"{name}: logical axes {axes} do not match the shape {shape}")
  spec, used = [], set()
  for dim, (n, ax) in enumerate(zip(shape, axes)):
    if ax not in table:
      raise ValueError(f"{name}: logical axis {ax!r} has no entry in pangu_jax.parallel.mesh.RULES")
    rule = table[ax]
    mesh_axes = tuple(a for a in ((rule,) if isinstance(rule, str) else rule or ()) if sizes[a] > 1)
    k = math.prod(sizes[a] for a in mesh_axes)
    if n % k:
      what = " x ".join(f"`{a}`" for a in mesh_axes)
      raise ConfigError(f"{name}: {what} of size {k} does not divide dim {dim} of size {n} (logical axis `{ax}`); "
                        "change config.parallel or the model's sizes")
    if used & set(mesh_axes):
      raise ValueError(f"{name}: mesh axes {sorted(used & set(mesh_axes))} split two dims (logical axes {axes})")
    used |= set(mesh_axes)
    spec.append(mesh_axes[0] if len(mesh_axes) == 1 else (mesh_axes or None))
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def param_specs(axes, shapes, layout: Layout, root: str = "params"):
  """PartitionSpecs of a parameter tree: `axes` from `transformer.param_axes`, `shapes` its arrays (or shapes)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf, ax: logical_spec(root + _keystr(path), tuple(leaf.shape), ax, layout), shapes, axes)


def param_shardings(axes, shapes, mesh: Mesh, layout: Layout):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(axes, shapes, layout),
                      is_leaf=lambda x: isinstance(x, P))


def state_shardings(abstract_state, params_shardings, mesh: Mesh):
  """Train-state shardings: params as given; each optimiser moment (a subtree shaped like the params, which is
  how optax keeps them) takes its parameter's sharding, leaf by leaf; everything else is replicated.

  A non-scalar optimiser leaf outside such a subtree is an error (it would otherwise be silently replicated)."""
  params = abstract_state["params"]
  pdef, pshapes = jax.tree.structure(params), [tuple(a.shape) for a in jax.tree.leaves(params)]
  replicated = NamedSharding(mesh, P())
  is_moment = lambda x: jax.tree.structure(x) == pdef and [tuple(a.shape) for a in jax.tree.leaves(x)] == pshapes

  def opt(path, node):
    if is_moment(node):
      return params_shardings
    if len(node.shape):
      raise ValueError(f"opt_state{_keystr(path)}: an optimiser leaf of shape {node.shape} that is not part of a "
                       "parameter-shaped moment (no sharding rule)")
    return replicated

  out = {k: jax.tree.map(lambda _: replicated, v) for k, v in abstract_state.items()}
  out["params"] = params_shardings
  out["opt_state"] = jax.tree_util.tree_map_with_path(opt, abstract_state["opt_state"], is_leaf=is_moment)
  return out


def _keystr(path) -> str:
  return "".join(f".{getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))}" for k in path)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Token batches (B, S+1): sequences split over data and the EP axes."""
  return NamedSharding(mesh, P(BATCH_AXES, None))
