"""Multi-device training on 8 simulated CPU devices: every layout computes what one device computes.

Each test runs its body in a fresh process with 8 CPU devices (tests/multidevice.py). The reference is the same
config trained on one device by the same trainer (`pangu_jax.train.loop.train`), so the comparison covers the
whole step: sharded init, expert-parallel dispatch, GSPMD collectives, optimiser and loss.
"""

import json

import numpy as np
import pytest
from multidevice import run_with_devices

from pangu_jax.parallel import pipeline, placement

HARNESS = """
import json, os, sys, tempfile
import numpy as np
from pangu_jax.config import base_config
from pangu_jax.train.loop import train

def small(steps=20, train_over=None, **parallel):
  c = base_config()
  c.model.num_layers, c.model.hidden_size, c.model.expert_ffn_dim, c.model.dense_ffn_dim = 3, 64, 32, 128
  c.model.q_lora_rank, c.model.kv_lora_rank = 32, 16
  c.train.update(batch_size=16, seq_len=32, steps=steps, warmup_steps=2, log_every=1, eval_every=steps,
                 eval_batches=1, checkpoint_every=steps, ep_group_size=2)
  c.data.max_bytes = 100000
  c.train.update(train_over or {})
  c.parallel.update(parallel)
  return c

def losses(cfg):
  d = tempfile.mkdtemp()
  train(cfg, d, progress=False, log=lambda m: None)
  rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
  return [r["loss"] for r in rows if "loss" in r], [r["placement"] for r in rows if "placement" in r]
"""


def _compare(layouts: dict) -> dict:
  out = run_with_devices(HARNESS + f"""
ref, _ = losses(small())
res = {{}}
for name, lay in {layouts!r}.items():
  got, _ = losses(small(**lay))
  res[name] = max(abs(a - b) / abs(a) for a, b in zip(ref, got))
  assert len(got) == len(ref) == 20
print(json.dumps(res))
""", timeout=1200)
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_layout_matches_one_device():
  """data x expert (flat and hierarchical all-to-all), data x expert x tensor (TP and TP-extend-EP) and a 2-stage
  pipeline, each over 20 steps against one single-device reference run (one process: the reference is shared)."""
  got = _compare({"flat": {"data": 2, "expert": 4},
                  "hier": {"data": 2, "expert": 4, "devices_per_node": 2, "hier_a2a": True},
                  "pipeline": {"data": 4, "stage": 2, "pipeline_microbatches": 2},
                  "tp": {"data": 2, "expert": 2, "tensor": 2},
                  "tp_extend_ep": {"data": 2, "expert": 2, "tensor": 2, "tp_extend_ep": True}})
  assert set(got) == {"flat", "hier", "pipeline", "tp", "tp_extend_ep"}
  assert max(got.values()) < 2e-5, got


def test_flat_and_hierarchical_all_to_all_identical_and_bytes_counted():
  """Top-2 experts always on one node: flat sends such a token across nodes twice, hierarchical once."""
  out = run_with_devices("""
import json
import jax, jax.numpy as jnp, numpy as np
from pangu_jax.config import base_config
from pangu_jax.model import moe
from pangu_jax.parallel import mesh as mesh_lib
from pangu_jax.parallel.expert_parallel import make_dispatch

cfg = base_config().model
e, d, f, k, t = 8, 16, 8, 2, 64
cfg.num_routed_experts, cfg.hidden_size, cfg.expert_ffn_dim, cfg.top_k = e, d, f, k
rng = np.random.default_rng(0)
experts = {"w_in": jnp.asarray(rng.normal(size=(e, d, 2 * f)) * 0.3, jnp.float32),
           "w_out": jnp.asarray(rng.normal(size=(e, f, d)) * 0.3, jnp.float32)}
x = jnp.asarray(rng.normal(size=(t, d)), jnp.float32)
node = rng.integers(0, 2, t)  # node 0 holds experts 0-3, node 1 experts 4-7 (ep = 2 nodes x 2 devices)
pair = np.stack([rng.choice(4, 2, replace=False) for _ in range(t)]) + 4 * node[:, None]
idx, w = jnp.asarray(pair, jnp.int32), jnp.asarray(rng.uniform(0.1, 1, (t, k)), jnp.float32)
ref, _ = moe.DISPATCH["dense"](experts, x, idx, w, cfg)
res = {}
for name, hier in (("flat", False), ("hier", True)):
  lay = mesh_lib.Layout(data=2, stage=1, expert_node=2, expert=2, tensor=1, hier_a2a=hier)
  y, crossing = jax.jit(make_dispatch(mesh_lib.make_mesh(lay), lay, e).with_stats)(experts, x, idx, w)
  res[name] = (np.asarray(y), int(crossing))
shard = np.arange(t) // (t // 8)  # the 8 token shards over (data, expert_node, expert)
my_node = (shard % 4) // 2
print(json.dumps({"flat_vs_hier": float(np.abs(res["flat"][0] - res["hier"][0]).max()),
                  "vs_dense": float(np.abs(res["flat"][0] - np.asarray(ref)).max()),
                  "rows": [res["flat"][1], res["hier"][1]],
                  "expected": [int(np.sum(pair // 4 != my_node[:, None])), int(np.sum(node != my_node))]}))
""")
  got = json.loads(out.strip().splitlines()[-1])
  assert got["flat_vs_hier"] == 0.0  # the same floating-point sums, not just close
  assert got["vs_dense"] < 1e-5
  assert got["rows"] == got["expected"]  # rows crossing the inter-node axis, counted independently
  assert got["rows"][1] < got["rows"][0]
  # bytes = rows x hidden x 4 (fp32): hierarchical halves them when both experts share the remote node
  assert got["rows"][0] == 2 * got["rows"][1]


def test_pure_data_parallel_routes_experts_per_replica():
  """data=8 (no EP, no TP) uses the shard_map dispatch (GSPMD ran the single-device MoE on the global batch on
  every device); its output and gradients equal the single-device dropless dispatch's; `capacity` keeps GSPMD."""
  out = run_with_devices("""
import json
import jax, jax.numpy as jnp, numpy as np
from pangu_jax.config import base_config
from pangu_jax.model import moe
from pangu_jax.parallel import runtime

c = base_config()
c.model.num_routed_experts, c.model.hidden_size, c.model.expert_ffn_dim, c.model.top_k = 8, 16, 8, 2
c.parallel.data = 8
par = runtime.setup(c)
c_cap = base_config()
c_cap.parallel.data, c_cap.model.moe_impl = 8, "capacity"
cap = runtime.setup(c_cap)
e, d, f, k, t = 8, 16, 8, 2, 64
rng = np.random.default_rng(0)
experts = {"w_in": jnp.asarray(rng.normal(size=(e, d, 2 * f)) * 0.3, jnp.float32),
           "w_out": jnp.asarray(rng.normal(size=(e, f, d)) * 0.3, jnp.float32)}
x = jnp.asarray(rng.normal(size=(t, d)), jnp.float32)
idx = jnp.asarray(np.stack([rng.choice(e, k, replace=False) for _ in range(t)]), jnp.int32)
w = jnp.asarray(rng.uniform(0.1, 1, (t, k)), jnp.float32)
r = jnp.asarray(rng.normal(size=(t, d)), jnp.float32)
x = jax.device_put(x, par.batch_sharding)

def loss(fn):
  return lambda ex, xx: jnp.sum(fn(ex, xx, idx, w, c.model)[0] * r)

ref_l, ref_g = jax.value_and_grad(loss(moe.DISPATCH["dropless"]), argnums=(0, 1))(experts, x)
got_l, got_g = jax.jit(jax.value_and_grad(loss(par.dispatch), argnums=(0, 1)))(experts, x)
diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(ref_g), jax.tree.leaves(got_g)))
print(json.dumps({"has_dispatch": par.dispatch is not None, "capacity_keeps_gspmd": cap.dispatch is None,
                  "loss_diff": float(abs(ref_l - got_l)), "grad_diff": diff}))
""")
  got = json.loads(out.strip().splitlines()[-1])
  assert got["has_dispatch"] and got["capacity_keeps_gspmd"]
  assert got["loss_diff"] < 1e-4 and got["grad_diff"] < 1e-5, got


@pytest.mark.slow
def test_dynamic_placement_moves_experts_lowers_cv_and_keeps_losses():
  """A skewed router (bias sends every token to experts 0 and 1, both on EP device 0): re-placement must spread
  them, and training must not notice."""
  out = run_with_devices(HARNESS + """
import pangu_jax.train.state as st
orig = st.init_train_state
def skewed(cfg):
  s = orig(cfg)
  b = s["params"]["moe_layers"]["moe"]["router_bias"]
  s["params"]["moe_layers"]["moe"]["router_bias"] = b.at[:, 0].set(5.0).at[:, 1].set(4.0)
  return s
st.init_train_state = skewed
import pangu_jax.train.loop as loop
loop.init_train_state = skewed
kw = dict(data=2, expert=4)
base, _ = losses(small(**kw))
moved, reps = losses(small(placement_every=5, **kw))
print(json.dumps({"max_rel": max(abs(a - b) / abs(a) for a, b in zip(base, moved)), "reports": reps}))
""", timeout=1200)
  got = json.loads(out.strip().splitlines()[-1])
  first = got["reports"][0]
  assert first["experts_moved"] > 0
  assert min(b - a for b, a in zip(first["cv_before"], first["cv_after"])) >= 0.08
  assert got["max_rel"] < 2e-5


def test_greedy_placement_is_a_balanced_permutation():
  rng = np.random.default_rng(1)
  for _ in range(20):
    load = rng.exponential(size=16) ** 3
    order = placement.greedy_order(load, 4)
    assert sorted(order.tolist()) == list(range(16))
    dev = placement.device_loads(load[order][None], 4)[0]
    # LPT bound: no device above the mean by more than the largest single load
    assert dev.max() <= load.sum() / 4 + load.max() + 1e-9


def test_placement_plan_respects_min_gain_and_permute_is_consistent():
  ema = np.array([[10.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0] * 8])
  order, rep = placement.plan(ema, 4, 0.08)
  assert rep["layers_moved"] == 1  # layer 2 is already balanced
  assert order[1].tolist() == list(range(8))
  assert set(order[0][:2].tolist()) != {0, 1}  # the two hot experts no longer share device 0
  state = {"params": {"moe_layers": {"moe": {"router": np.arange(2 * 3 * 8.0).reshape(2, 3, 8),
                                              "router_bias": ema.copy(),
                                              "experts": {"w_in": np.arange(2 * 8 * 2.0).reshape(2, 8, 2, 1)}}}},
           "load_ema": ema.copy(), "step": np.int32(3)}
  out = placement.permute_state(state, order)
  for lyr in range(2):
    for s in range(8):
      o = order[lyr, s]
      assert out["params"]["moe_layers"]["moe"]["router"][lyr, :, s].tolist() == state["params"]["moe_layers"][
          "moe"]["router"][lyr, :, o].tolist()
      assert out["params"]["moe_layers"]["moe"]["experts"]["w_in"][lyr, s].tolist() == state["params"][
          "moe_layers"]["moe"]["experts"]["w_in"][lyr, o].tolist()
      assert out["load_ema"][lyr, s] == ema[lyr, o]


def test_one_f_one_b_table_is_a_valid_schedule_with_the_textbook_bubble():
  for p, m in [(2, 4), (4, 8), (3, 3), (4, 2)]:
    act, mb = pipeline.one_f_one_b(p, m)
    t = act.shape[0]
    when = {(a, s, i): tick for tick in range(t) for s in range(p) for a, i in [(act[tick, s], mb[tick, s])] if a}
    assert len(when) == 2 * p * m  # every forward and backward exactly once
    for s in range(p):
      for i in range(m):
        if s:
          assert when[(pipeline.FWD, s - 1, i)] < when[(pipeline.FWD, s, i)]
        nxt = (pipeline.BWD, s + 1, i) if s < p - 1 else (pipeline.FWD, s, i)
        assert when[nxt] < when[(pipeline.BWD, s, i)]
        # 1F1B: never more than P - s micro-batches in flight on stage s
      flight = np.cumsum([1 if a == pipeline.FWD else -1 if a == pipeline.BWD else 0 for a in act[:, s]])
      assert flight.max() <= min(p - s, m)
    if m >= p:
      assert t == 2 * (m + p - 1)
      assert pipeline.bubble_fraction(act) == pytest.approx((p - 1) / (m + p - 1))


# --------------------------------------------------------------------------- parameter shardings from logical axes

# The layouts of the tests above (and tests/test_multihost.py's), as `config.parallel` overrides.
LAYOUTS = {"one_device": {}, "flat": {"data": 2, "expert": 4},
           "hier": {"data": 2, "expert": 4, "devices_per_node": 2, "hier_a2a": True},
           "pipeline": {"data": 4, "stage": 2, "pipeline_microbatches": 2},
           "tp": {"data": 2, "expert": 2, "tensor": 2},
           "tp_extend_ep": {"data": 2, "expert": 2, "tensor": 2, "tp_extend_ep": True},
           "pure_dp": {"data": 8}, "multihost": {"data": 2, "expert": 2}}

# What the name-based rules that the logical axes replaced gave, as a table: leaf name -> the dim (counted from
# the end) split over `tensor` (None: none); they applied to matrices and stacked vectors, not to 1-D leaves.
# Besides: routed experts (stack, E, ., .) had E over the EP axes (+ `tensor` with TP-extend-EP) and, without it,
# w_out's ffn dim over `tensor`; the MoE stack's layer dim was over `stage`.
OLD_TENSOR_DIM = {"embed": -2, "head": -1, "q": -1, "q_a": -1, "q_a_norm": -1, "q_b": -1, "kv_a": -1,
                  "kv_a_norm": -1, "kv_b": -1, "o": -2, "proj": -2, "w_in": -1, "w_out": -2, "router": None}
# Changed on purpose: the old rules also split stacked norm gammas over the model width (attn_norm, mlp_norm,
# post_*_norm, MTP's hidden/embed/out_norm: (layers, d)) and the router bias over `tensor` (their "1-D" test
# counted the layer dim), unlike their documented table (norms, router, biases replicated); now replicated.
REPLICATED_NOW = ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm", "hidden_norm", "embed_norm",
                  "out_norm", "router_bias")


def _model(name):
  from pangu_jax.config import base_config  # noqa: PLC0415
  from pangu_jax.presets import load_preset  # noqa: PLC0415

  if name == "harness":  # HARNESS's small()
    c = base_config()
    c.model.update(num_layers=3, hidden_size=64, expert_ffn_dim=32, dense_ffn_dim=128, q_lora_rank=32,
                   kv_lora_rank=16)
    return c
  return load_preset(name)


def _old_spec(names, shape, layout):
  from jax.sharding import PartitionSpec as P  # noqa: PLC0415

  spec = [None] * len(shape)
  if layout.stage > 1 and names[0] == "moe_layers":
    spec[0] = "stage"
  if "experts" in names:
    spec[1] = layout.expert_axes
    if not layout.tp_extend_ep and names[-1] == "w_out":
      spec[2] = "tensor"
  elif len(shape) > 1 and names[-1] not in REPLICATED_NOW and OLD_TENSOR_DIM[names[-1]] is not None:
    spec[OLD_TENSOR_DIM[names[-1]]] = "tensor"
  sizes = dict(zip(("data", "stage", "expert_node", "expert", "tensor"), layout.shape))
  out = []  # mesh axes of size 1 split nothing: left out, as the new specs do
  for s in spec:
    axes = tuple(a for a in ((s,) if isinstance(s, str) else s or ()) if sizes[a] > 1)
    out.append(axes[0] if len(axes) == 1 else (axes or None))
  while out and out[-1] is None:
    out.pop()
  return P(*out)


@pytest.mark.parametrize("model", ["tiny", "small", "harness"])
def test_logical_axes_give_the_old_shardings_for_every_layout(model):
  import jax  # noqa: PLC0415
  from jax.sharding import PartitionSpec as P  # noqa: PLC0415

  from pangu_jax.model import transformer  # noqa: PLC0415
  from pangu_jax.parallel import mesh as mesh_lib  # noqa: PLC0415

  c = _model(model)
  axes = transformer.param_axes(c.model)
  shapes = jax.eval_shape(lambda: transformer.init_params(jax.random.key(0), c.model))
  checked = 0
  for name, over in LAYOUTS.items():
    pc = c.parallel.copy_and_resolve_references()
    pc.update(over)
    layout = mesh_lib.layout_from_config(pc)
    if layout.stage > 1 and transformer.num_moe_layers(c.model) % layout.stage:
      continue  # the next test: an error now
    specs = mesh_lib.param_specs(axes, shapes, layout)
    flat = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, P))
    assert len(flat) == len(jax.tree.leaves(shapes))
    for path, got in flat:
      names = tuple(k.key for k in path)
      leaf = shapes
      for k in names:
        leaf = leaf[k]
      assert got == _old_spec(names, leaf.shape, layout), (name, names, got)
      if name == "one_device":
        assert got == P()
      checked += 1
  assert checked > 7 * 50


def test_a_dim_that_does_not_divide_is_a_one_line_error_naming_weight_and_axis():
  import jax  # noqa: PLC0415

  from confspec import ConfigError  # noqa: PLC0415
  from pangu_jax.model import transformer  # noqa: PLC0415
  from pangu_jax.parallel import mesh as mesh_lib  # noqa: PLC0415

  c = _model("tiny")
  c.model.expert_ffn_dim = 33  # routed w_out's ffn dim under tensor = 2 (the old rules replicated it silently)
  lay = mesh_lib.Layout(data=1, stage=1, expert_node=1, expert=2, tensor=2)
  shapes = jax.eval_shape(lambda: transformer.init_params(jax.random.key(0), c.model))
  with pytest.raises(ConfigError) as err:
    mesh_lib.param_specs(transformer.param_axes(c.model), shapes, lay)
  msg = str(err.value)
  assert "\n" not in msg
  assert msg.startswith("params.moe_layers.moe.experts.w_out: `tensor` of size 2 does not divide dim 2 of size 33")
  c = _model("tiny")  # 3 MoE layers over 2 stages
  lay = mesh_lib.Layout(data=4, stage=2, expert_node=1, expert=1, tensor=1)
  shapes = jax.eval_shape(lambda: transformer.init_params(jax.random.key(0), c.model))
  with pytest.raises(ConfigError, match=r"^params\.moe_layers\.\S+: `stage` of size 2 does not divide dim 0 of size 3"):
    mesh_lib.param_specs(transformer.param_axes(c.model), shapes, lay)


def test_gqa_heads_shard_over_tensor_and_kv_heads_must_divide():
  """GQA: q / k / v columns and o rows split over `tensor` (whole heads); num_kv_heads % tp is one line."""
  import jax  # noqa: PLC0415
  from jax.sharding import PartitionSpec as P  # noqa: PLC0415

  from confspec import ConfigError  # noqa: PLC0415
  from pangu_jax.model import transformer  # noqa: PLC0415
  from pangu_jax.parallel import mesh as mesh_lib  # noqa: PLC0415

  c = _model("tiny")
  c.model.update(attention="gqa", num_heads=4, num_kv_heads=2, head_dim=16)
  c.parallel.update(tensor=2, expert=2, data=2)
  lay = mesh_lib.layout_from_config(c.parallel)
  mesh_lib.check_fits(c, lay, num_devices=8)
  shapes = jax.eval_shape(lambda: transformer.init_params(jax.random.key(0), c.model))
  specs = mesh_lib.param_specs(transformer.param_axes(c.model), shapes, lay)["moe_layers"]["attn"]
  assert specs == {"q": P(None, None, "tensor"), "k": P(None, None, "tensor"), "v": P(None, None, "tensor"),
                   "o": P(None, "tensor")}
  c.model.num_kv_heads = 1
  with pytest.raises(ConfigError, match=r"^config\.model\.num_kv_heads: 1 must be divisible by "
                     r"config\.parallel\.tensor \(2\)"):
    mesh_lib.check_fits(c, lay, num_devices=8)


def test_optimiser_moments_take_their_parameters_shardings():
  import jax  # noqa: PLC0415
  from jax.sharding import PartitionSpec as P  # noqa: PLC0415

  from pangu_jax.parallel import mesh as mesh_lib  # noqa: PLC0415
  from pangu_jax.train.state import train_state_shapes  # noqa: PLC0415

  c = _model("tiny")
  c.parallel.placement_every = 5  # load_ema: a non-parameter (L, E) leaf, replicated
  shapes = train_state_shapes(c)
  mesh = mesh_lib.make_mesh(mesh_lib.layout_from_config(c.parallel), jax.devices()[:1])
  tags = jax.tree_util.tree_map_with_path(lambda p, _: jax.tree_util.keystr(p), shapes["params"])
  out = mesh_lib.state_shardings(shapes, tags, mesh)
  adam = out["opt_state"][1][0]
  assert adam.mu == tags and adam.nu == tags  # each moment leaf: its own parameter's sharding
  assert adam.count.spec == P() and out["load_ema"].spec == P() and out["step"].spec == P()
