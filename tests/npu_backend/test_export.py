"""Exporter: JAX graphs -> torch.fx match JAX; unsupported primitives, device fallback, bad files, reload w/o JAX."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import REPO, small_model_cfg

from npu_backend.device import select_device
from npu_backend.export import UnsupportedPrimitive, export_function
from npu_backend.export.model import export_model, write_export
from npu_backend.runtime import ExportError, build_module, load
from npu_backend.runtime.graph import to_torch
from npu_backend.weights import to_torch_layout
from pangu_jax.model import moe, transformer
from pangu_jax.model.init import unbox


def _run_export(fn, params, *inputs):
  g = export_function(fn, params, *inputs)
  gm = build_module(g.to_json(), {k: to_torch(v) for k, v in g.tensors.items()})
  return gm(*[torch.from_numpy(np.asarray(x)) for x in inputs])


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _scaled(cfg, scale=3.0, seed=0):
  p = transformer.init_params(jax.random.key(seed), cfg)
  return jax.tree_util.tree_map_with_path(
      lambda path, a: a * scale if a.ndim >= 2 and "embed" not in jax.tree_util.keystr(path) else a, p)


VARIANTS = {
    "dense_first+mtp+sigmoid+dropless": dict(),
    "capacity": dict(moe_impl="capacity", capacity_factor=1.0),
    "dense_impl+softmax": dict(moe_impl="dense", router_score="softmax", router_bias=False),
    "no_q_lora+no_dense_first+mtp2": dict(q_lora_rank=0, num_dense_layers=0, mtp_depth=2),
    "no_sandwich": dict(sandwich_norm=False, tiny_init=False),
}
SCALE = {"no_sandwich": 12.0}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_exported_model_matches_jax(name):
  cfg = small_model_cfg(**VARIANTS[name])
  params = _scaled(cfg, scale=SCALE.get(name, 3.0))
  toks = np.asarray(jax.random.randint(jax.random.key(1), (2, 12), 0, cfg.vocab_size), np.int32)
  out = transformer.forward(params, toks, cfg)
  assert float(jnp.std(out.logits)) > 1.0, "logits must be far from uniform"
  g = export_model(cfg, params, 2, 12)
  gm = build_module(g.to_json(), {k: to_torch(v) for k, v in g.tensors.items()})
  got = gm(torch.from_numpy(toks.copy()))
  assert _rel(got[0], out.logits) <= 1e-5
  assert _rel(got[1], out.mtp_logits) <= 1e-5


def test_bfloat16_export_keeps_dtype_and_matches():
  cfg = small_model_cfg(dtype="bfloat16")
  params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), _scaled(cfg))
  toks = np.asarray(jax.random.randint(jax.random.key(1), (2, 12), 0, cfg.vocab_size), np.int32)
  g = export_model(cfg, params, 2, 12)
  assert any(v.dtype.name == "bfloat16" for v in g.tensors.values())
  tensors = {k: to_torch(v) for k, v in g.tensors.items()}
  assert tensors["head"].dtype == torch.bfloat16
  got = build_module(g.to_json(), tensors)(torch.from_numpy(toks))
  ref = transformer.forward(params, toks, cfg).logits
  assert _rel(got[0].float(), ref) <= 2e-2


def test_control_flow_and_general_gather_scatter():
  def fn(p, x, idx):
    y = jax.lax.cond(x.sum() > 0, lambda v: v * 2.0, lambda v: v - 1.0, x)
    y, _ = jax.lax.scan(lambda c, r: (c + r * p["w"], c.sum()), jnp.zeros(x.shape[1:]), y)
    n = jax.lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 1, c[1] * 1.5), (jnp.int32(0), y))[1]
    g = jnp.take_along_axis(x, idx, axis=1)
    s = jnp.zeros((4, 3)).at[idx[:, 0] % 4].add(x[:, :3])  # duplicate indices accumulate
    t = jnp.take(x, idx[0] - 2, axis=0, mode="fill", fill_value=-7.0)
    srt = jnp.argsort(x[:, 0], stable=True)
    red = (jnp.prod(x[None] + 2.0, axis=(0, 2)), jnp.all(x[None] > -5, axis=(0, 2)), jnp.sort(x[:, 1]))
    return n, g, s, t, srt, jnp.cumsum(idx, axis=1), jax.lax.top_k(x, 2)[1], *red

  params = {"w": jnp.arange(3.0)}
  x = jax.random.normal(jax.random.key(0), (5, 3))
  idx = jax.random.randint(jax.random.key(1), (5, 3), 0, 3)
  want = fn(params, x, idx)
  got = _run_export(fn, params, x, idx)
  for w, g_ in zip(want, got):
    np.testing.assert_allclose(g_.numpy(), np.asarray(w), rtol=1e-6, atol=1e-6)


def test_dropless_moe_layer_with_custom_vjp_exports():
  cfg = small_model_cfg(moe_impl="dropless")
  p = unbox(moe.init_moe(jax.random.key(0), cfg, jnp.float32))
  p = jax.tree.map(lambda a: a * 20, p)
  x = jax.random.normal(jax.random.key(1), (2, 8, cfg.hidden_size))
  got = _run_export(lambda p, x: moe.moe(p, x, cfg)[0], p, x)
  assert _rel(got, moe.moe(p, x, cfg)[0]) <= 1e-5


def test_unsupported_primitive_names_primitive_and_line():
  def fn(p, x):
    return jnp.fft.fft(x * p["a"]).real  # fft has no translation

  with pytest.raises(UnsupportedPrimitive) as err:
    export_function(fn, {"a": jnp.ones(4)}, np.ones(4, np.float32))
  msg = str(err.value)
  assert "'fft'" in msg and "test_export.py:" in msg


def test_stub_torch_npu_without_cann_falls_back_to_cpu(tmp_path):
  stub = tmp_path / "torch_npu"
  stub.mkdir()
  (stub / "__init__.py").write_text(
      "raise ImportError('libhccl.so: cannot open shared object file: No such file or directory')\n")
  code = "from npu_backend.device import select_device; c = select_device(); print(c.device); print(c.reason)"
  env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  device, reason = proc.stdout.strip().splitlines()
  assert device == "cpu" and "libhccl.so" in reason and "\n" not in reason


def test_device_request_is_validated():
  assert select_device("cpu").device == "cpu"
  with pytest.raises(ValueError, match="--device"):
    select_device("tpu")


def _export_tiny(tmp_path):
  cfg_model = small_model_cfg()
  params = _scaled(cfg_model)
  g = export_model(cfg_model, params, 1, 10)
  write_export(str(tmp_path), g, params, {"test": True})
  return cfg_model, params


def test_truncated_safetensors_is_rejected(tmp_path):
  _export_tiny(tmp_path)
  path = tmp_path / "weights.safetensors"
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 3)
  with pytest.raises(ExportError, match="truncated or corrupt"):
    load(str(tmp_path))


def test_saved_export_reloads_without_jax(tmp_path):
  cfg_model, params = _export_tiny(tmp_path)
  toks = np.arange(10, dtype=np.int32)[None] % cfg_model.vocab_size
  want = np.asarray(transformer.forward(params, toks, cfg_model).logits)
  np.save(tmp_path / "toks.npy", toks)
  code = textwrap.dedent(f"""
      import sys
      sys.modules["jax"] = None  # any import of JAX now fails
      import numpy as np, torch
      from npu_backend.runtime import load
      m = load({str(tmp_path)!r})
      out = m(torch.from_numpy(np.load({str(tmp_path / 'toks.npy')!r})))[0]
      np.save({str(tmp_path / 'out.npy')!r}, out.numpy())
      print("jax" in sys.modules and sys.modules["jax"] is not None)
  """)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "False"
  np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=1e-5, atol=1e-5)


def test_torch_layout_state_dict_computes_the_same_mlp(tmp_path):
  """An independent torch implementation of the first dense block's MLP, from the torch-layout state_dict."""
  cfg = small_model_cfg()
  params = _scaled(cfg, scale=1.0)
  sd = {k: torch.from_numpy(v) for k, v in to_torch_layout(params).items()}
  x = jax.random.normal(jax.random.key(3), (4, cfg.hidden_size))
  want = moe.mlp(jax.tree.map(lambda a: a[0], params["dense_layers"]["mlp"]), x)
  xt = torch.from_numpy(np.asarray(x))
  pre = "model.layers.0.mlp."
  gate = torch.nn.functional.linear(xt, sd[pre + "gate_proj.weight"])
  up = torch.nn.functional.linear(xt, sd[pre + "up_proj.weight"])
  got = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, sd[pre + "down_proj.weight"])
  np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-5, atol=1e-6)
  assert sd["lm_head.weight"].shape == (cfg.vocab_size, cfg.hidden_size)
  e_last = cfg.num_routed_experts - 1
  assert f"model.layers.{cfg.num_layers - 1}.mlp.experts.{e_last}.down_proj.weight" in sd
  assert f"model.layers.{cfg.num_layers}.eh_proj.weight" in sd  # MTP depth 0 follows the main layers


def test_export_binary(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "npu_backend.export", "--config=configs/pangu/tiny.py",
                         f"--out={tmp_path}", "--seq_len=8", "--json"], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["outputs"] == ["logits", "mtp_logits"]
  for f in ("graph.json", "weights.safetensors", "state_dict.safetensors", "export.json"):
    assert (tmp_path / f).exists()


def test_tiny_preset_export_matches_jax():
  from pangu_jax.presets import load_preset

  cfg = load_preset("tiny").model
  params = _scaled(cfg, scale=2.0)
  params["head"] = params["head"] * 15.0  # logits far from uniform without amplifying every layer
  toks = np.asarray(jax.random.randint(jax.random.key(5), (1, 24), 0, cfg.vocab_size), np.int32)
  out = transformer.forward(params, toks, cfg)
  assert float(jnp.std(out.logits)) > 1.0
  g = export_model(cfg, params, 1, 24)
  got = build_module(g.to_json(), {k: to_torch(v) for k, v in g.tensors.items()})(torch.from_numpy(toks.copy()))
  assert _rel(got[0], out.logits) <= 1e-5 and _rel(got[1], out.mtp_logits) <= 1e-5
