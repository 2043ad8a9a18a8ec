"""Calibration of this machine from microbenchmarks only: GEMM throughput against shape, memory and gather
bandwidth, per-kernel and per-step overheads, and collectives on simulated CPU devices (a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=N). The result is a hardware file (`simulate --calibrate
--out=FILE`) that `--hardware=FILE` accepts. No training run is ever used here.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from pangu_jax.sim.hardware import hardware_config, write_hardware_file

GEMM_M = (16, 64, 256, 1024, 4096)
GEMM_KN = (8, 32, 128, 512, 2048)
MAX_GEMM_FLOPS = 2.0e9  # larger shapes take the rate of the nearest measured one (flat beyond the grid)


def _best_time(fn, *args, seconds=0.1):
  """Mean seconds per call over `seconds` of back-to-back calls: the sustained rate this process gets. On a shared
  host a short or best-of window overstates it (the scheduler favours a task that just woke up), and a training
  run sees the sustained rate."""
  import jax  # noqa: PLC0415

  jax.block_until_ready(fn(*args))
  n, t0 = 0, time.perf_counter()
  while True:
    jax.block_until_ready(fn(*args))
    n += 1
    el = time.perf_counter() - t0
    if el >= seconds:
      return el / n


def speed_probe(stat: str = "load", windows: int = 15, seconds: float = 2.0) -> float:
  """Seconds per call of a fixed small workload (a 1024x256x256 GEMM, tanh, and an elementwise pass over 1M
  floats). stat="load": the mean over `seconds` of back-to-back calls, i.e. the share of the host this process
  gets right now (taken at calibration and around each validation run: their ratio tracks the load's drift).
  stat="min": the fastest of short windows (not used for predictions: it overstates a shared host's speed)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  f = jax.jit(lambda a, b, c: jnp.tanh(a @ b).sum() + (c * 1.0001 + 1.0).sum())
  a = jnp.ones((1024, 256), jnp.float32)
  b = jnp.ones((256, 256), jnp.float32)
  c = jnp.ones((1 << 20,), jnp.float32)
  f(a, b, c).block_until_ready()
  if stat == "load":
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
      f(a, b, c).block_until_ready()
      n += 1
    return (time.perf_counter() - t0) / n
  ts = []
  for _ in range(windows):
    t0 = time.perf_counter()
    for _ in range(3):
      f(a, b, c).block_until_ready()
    ts.append((time.perf_counter() - t0) / 3)
    time.sleep(0.005)
  return float(min(ts))


GEMM_BATCH_FLOPS = 4.0e7  # small shapes are timed R at a time in one program, R * flops >= this (R <= 64)


def measure_gemms(progress=None, grid_m=GEMM_M, grid_kn=GEMM_KN, seconds=0.1, op_overhead_s: float = 0.0) -> list:
  """[[M, K, N, FLOP/s]] of float32 GEMMs as a compiled training step runs them: R independent products (distinct
  weights, so XLA cannot merge them) in one jitted program, timed together. A single jitted call per GEMM would
  charge every small GEMM a whole host dispatch (~10-20 us here, 3-6x the arithmetic of a 128 x 48 x 128 product),
  which a training step pays once, not per op; the per-op cost inside a program is `op_overhead_s` (measured
  separately, added by the model to every kernel) and is taken out of the table so it is not counted twice."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  f = jax.jit(lambda a, bs: tuple(a @ b for b in bs))
  rows = []
  shapes = [(m, k, n) for m in grid_m for k in grid_kn for n in grid_kn if 2.0 * m * k * n <= MAX_GEMM_FLOPS]
  for i, (m, k, n) in enumerate(shapes):
    flops = 2.0 * m * k * n
    reps = int(min(64, max(1, -(-GEMM_BATCH_FLOPS // flops))))
    a = jnp.ones((m, k), jnp.float32)
    bs = tuple(jnp.full((k, n), 1.0 + 1e-3 * r, jnp.float32) for r in range(reps))
    t = _best_time(f, a, bs, seconds=seconds) / reps
    t = max(t - op_overhead_s, 0.5 * t)
    rows.append([m, k, n, flops / t])
    if progress:
      progress(i + 1, len(shapes))
  return rows


def measure_bandwidth() -> dict:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  n = 1 << 22
  x = jnp.ones((n,), jnp.float32)
  ew = jax.jit(lambda v: v * 1.0001 + 1.0)
  t = _best_time(ew, x)
  mem_bw = 2 * n * 4 / t
  rows, width = 1 << 15, 128
  tab = jnp.ones((rows, width), jnp.float32)
  idx = jnp.asarray(np.random.default_rng(0).permutation(rows).astype(np.int32))
  g = jax.jit(lambda a, i: jnp.take(a, i, axis=0))
  tg = _best_time(g, tab, idx)
  gather_bw = 2 * rows * width * 4 / tg
  # per-kernel overhead: a chain of dependent tiny matmuls (they cannot fuse), minus their arithmetic
  chain = 64
  w = jnp.eye(8, dtype=jnp.float32) * 0.5

  def many(v):
    for _ in range(chain):
      v = v @ w
    return v

  tc = _best_time(jax.jit(many), jnp.ones((8, 8), jnp.float32))
  # per-step host overhead: one dispatch of a jitted step on a small donated state plus a host sync
  state = {"a": jnp.zeros((16,)), "b": jnp.zeros((), jnp.int32)}
  step = jax.jit(lambda s: {"a": s["a"] + 1, "b": s["b"] + 1}, donate_argnums=(0,))
  state = step(state)
  reps = 200
  t0 = time.perf_counter()
  for _ in range(reps):
    state = step(state)
    int(state["b"])
  t_step = (time.perf_counter() - t0) / reps
  bf = jnp.ones((1024, 1024), jnp.bfloat16)
  t_bf16 = _best_time(jax.jit(jnp.matmul), bf, bf)
  return {"mem_bw": mem_bw, "gather_bw": gather_bw, "op_overhead_s": tc / chain, "step_overhead_s": t_step,
          "bf16_rate": 2 * 1024**3 / t_bf16}


# Scanned SwiGLU stacks (tokens, width, FFN width, layers) for the residual / recomputation probe: generic blocks,
# none of them a validation config; their saved activations (17-67 MB a step) lie beyond this host's caches, like
# a training step's.
SCAN_SHAPES = ((2048, 128, 256, 4), (1024, 256, 512, 4), (2048, 128, 128, 8), (4096, 128, 256, 4))


def _scan_stack(t, d, f, layers):
  """(forward, grad without remat, grad with full remat) jitted functions and their arguments, of a lax.scan over
  `layers` RMS-norm + SwiGLU + residual blocks on t tokens (float32)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  def block(x, w):
    w_in, w_out, g = w
    h = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * g
    a, b = jnp.split(h @ w_in, 2, -1)
    return x + (jax.nn.silu(a) * b) @ w_out

  def loss(ws, x, remat):
    body = jax.checkpoint(block) if remat else block
    y, _ = jax.lax.scan(lambda c, w: (body(c, w), None), x, ws)
    return jnp.mean(y * y)

  k = jax.random.split(jax.random.PRNGKey(0), 3)
  ws = (jax.random.normal(k[0], (layers, d, 2 * f)) * d ** -0.5,
        jax.random.normal(k[1], (layers, f, d)) * f ** -0.5, jnp.ones((layers, d)))
  x = jax.random.normal(k[2], (t, d))
  fns = (jax.jit(lambda w, v: loss(w, v, False)), jax.jit(jax.grad(lambda w, v: loss(w, v, False))),
         jax.jit(jax.grad(lambda w, v: loss(w, v, True))))
  return fns, (ws, x)


def _scan_stack_model(hw, t, d, f, layers):
  """The op model's (forward, backward) seconds of `_scan_stack` and the bytes a layer saves without remat (the
  memory model's convention: norm input and output, the w_in output and the SwiGLU output)."""
  from pangu_jax.sim import ops  # noqa: PLC0415

  s = 4
  op_list = ([ops.vec("norm", t * d, 2, s)] + ops.mlp_ops("blk", t, d, f, s)
             + [ops.vec("residual", t * d, 3, s, fine=False, flops_per=1.0)])
  fwd, bwd, _ = ops.ops_times(op_list, hw, "float32")
  return fwd * layers, bwd * layers, t * (2 * d + 3 * f) * s * layers


def measure_scan_costs(hw, shapes=SCAN_SHAPES, seconds: float = 0.5, windows: int = 3) -> dict:
  """What a scanned training step costs on XLA:CPU beyond the op model's forward + backward, from `_scan_stack`:
  `residual_s_per_byte` = (measured grad without remat - measured forward - modelled backward) / saved bytes
  (saving activations for the backward: written into the scan's stacked outputs, read back per layer), and
  `recompute_ratio` = (measured grad with full remat - measured forward - modelled backward) / measured forward
  (recomputation runs each layer's forward again just before its backward, on data still in cache). Each
  measurement is the median of `windows` sustained-rate windows; each constant the median over `shapes`."""
  rates, ratios, rows = [], [], []
  for shape in shapes:
    (fwd, grad, grad_remat), args = _scan_stack(*shape)
    tf, tg, tr = (float(np.median([_best_time(fn, *args, seconds=seconds) for _ in range(windows)]))
                  for fn in (fwd, grad, grad_remat))
    _, bwd_model, saved = _scan_stack_model(hw, *shape)
    rates.append(max(tg - tf - bwd_model, 0.0) / saved)
    ratios.append(min(max((tr - tf - bwd_model) / tf, 0.05), 2.0))
    rows.append({"shape": list(shape), "fwd_s": tf, "grad_s": tg, "grad_remat_s": tr, "bwd_model_s": bwd_model,
                 "saved_bytes": saved})
  return {"residual_s_per_byte": float(np.median(rates)), "recompute_ratio": float(np.median(ratios)),
          "rows": rows}


_COLLECTIVE_CODE = r"""
import json, time, sys
import jax, jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P
try:
  from jax import shard_map
except ImportError:
  from jax.experimental.shard_map import shard_map
n = len(jax.devices())
mesh = Mesh(np.array(jax.devices()), ("x",))
def timed(f, x):
  f(x).block_until_ready()
  k, t0 = 0, time.perf_counter()
  while True:
    f(x).block_until_ready(); k += 1
    if time.perf_counter() - t0 > 0.1: break
  return (time.perf_counter() - t0) / k
kinds = {
  "all_reduce": lambda v: jax.lax.psum(v, "x"),
  "all_gather": lambda v: jax.lax.all_gather(v, "x", tiled=True),
  "reduce_scatter": lambda v: jax.lax.psum_scatter(v, "x", tiled=True),
  "all_to_all": lambda v: jax.lax.all_to_all(v, "x", 0, 0, tiled=True),
  "ppermute": lambda v: jax.lax.ppermute(v, "x", [(i, (i + 1) % n) for i in range(n)]),
}
base = jax.jit(shard_map(lambda v: v * 1.0, mesh=mesh, in_specs=P("x"), out_specs=P("x")))
t_base = timed(base, jnp.ones((n * 64, 64), jnp.float32))
out = {"_dispatch": t_base}
for name, fn in kinds.items():
  spec_out = P("x") if name not in ("all_reduce",) else P("x")
  f = jax.jit(shard_map(fn, mesh=mesh, in_specs=P("x"), out_specs=spec_out, check_vma=False)) \
      if "check_vma" in shard_map.__code__.co_varnames else \
      jax.jit(shard_map(fn, mesh=mesh, in_specs=P("x"), out_specs=spec_out, check_rep=False))
  pts = []
  for rows in (64, 1024, 4096):
    x = jnp.ones((n * rows, 64), jnp.float32)  # per-device bytes: rows * 64 * 4
    pts.append([rows * 64 * 4, timed(f, x)])
  out[name] = pts
print(json.dumps(out))
"""


def measure_collectives(devices: int = 8) -> dict:
  """{kind: [latency_s, bytes_per_s]} fitted (least squares, time = a + bytes / rate) on `devices` simulated CPU
  devices; the per-device message size is the shard each device contributes."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", _COLLECTIVE_CODE], env=env, capture_output=True, text=True,
                        timeout=600)
  if proc.returncode != 0:
    raise RuntimeError(f"collective benchmark failed:\n{proc.stderr[-3000:]}")
  pts = json.loads(proc.stdout.strip().splitlines()[-1])
  table = {}
  dispatch = pts.pop("_dispatch")
  for kind, rows in pts.items():
    rows = sorted(rows)
    lat = max(rows[0][1] - dispatch, 1e-6)  # the smallest message, less one multi-device dispatch
    slope = max((rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0]), 1e-13)  # robust two-point rate
    table[kind] = [float(lat), float(1.0 / slope)]
  return table


def calibrate(devices: int = 8, progress=None, quick: bool = False) -> tuple:
  """Runs every microbenchmark; returns (hardware ConfigDict, notes per field). `quick` (tests): shorter GEMM
  timings and no collectives (single-device predictions only)."""
  import jax  # noqa: PLC0415

  probe = speed_probe("load")
  grid = dict(seconds=0.03) if quick else {}
  bw = measure_bandwidth()
  gemms = measure_gemms(progress, op_overhead_s=bw["op_overhead_s"], **grid)
  coll = {k: [1e-4, 1e8] for k in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "ppermute")} \
      if quick else measure_collectives(devices)
  peak32 = max(r[3] for r in gemms)
  cpu = platform.processor() or platform.machine()
  hw = hardware_config(
      name=f"calibrated_{platform.node()}", matmul_peak={"bfloat16": bw["bf16_rate"], "float32": peak32},
      vector_peak={"bfloat16": bw["mem_bw"], "float32": bw["mem_bw"]}, gemm_eff_max=1.0, gemm_half_dim=0.0,
      attn_eff=1.0, memory_gb=_host_memory_gb(), mem_bw=bw["mem_bw"], mem_bw_eff=1.0, gather_bw=bw["gather_bw"],
      mem_reserved_gb=0.0, devices_per_node=devices, intra_bw=coll["all_to_all"][1], intra_latency_s=
      coll["all_to_all"][0], inter_bw=coll["all_to_all"][1], inter_latency_s=coll["all_to_all"][0], comm_eff=1.0,
      offload_bw=bw["mem_bw"], op_overhead_s=bw["op_overhead_s"], step_overhead_s=bw["step_overhead_s"],
      host_shared_compute=True, overlap_eff=0.0, kernels="xla_cpu", probe_s=probe,
      source=f"calibrated {time.strftime('%Y-%m-%d %H:%M')} on {cpu}, {os.cpu_count()} cores, jax {jax.__version__}",
      gemm_table=gemms, collective_table=coll)
  scan = measure_scan_costs(hw, **(dict(shapes=((512, 64, 128, 2),), seconds=0.03, windows=1) if quick else {}))
  hw.residual_s_per_byte, hw.recompute_ratio = scan["residual_s_per_byte"], scan["recompute_ratio"]
  return hw, calibration_notes(devices)


def calibration_notes(devices: int = 8) -> dict:
  """The source of each field of a calibrated hardware file (written beside it)."""
  return {
      "matmul_peak": "measured: float32 = best GEMM rate of the table; bfloat16 = a 1024^3 bf16 matmul",
      "vector_peak": "measured: elementwise ops are bandwidth-bound here; set to mem_bw (FLOP/s never binds)",
      "gemm_eff_max": "unused when gemm_table is present", "gemm_half_dim": "unused when gemm_table is present",
      "attn_eff": "unused by the xla_cpu kernels (attention is two batched GEMMs + softmax)",
      "memory_gb": "host RAM (os.sysconf)", "mem_bw": "measured: fused elementwise x*a+b over 16 MB, read+write",
      "mem_bw_eff": "1: mem_bw is already the achieved rate", "gather_bw": "measured: jnp.take of 32768 x 128 rows",
      "mem_reserved_gb": "none reserved on the host", "devices_per_node": "simulated CPU devices in one process",
      "intra_bw": "measured all_to_all rate (simulated devices)", "intra_latency_s": "measured all_to_all latency",
      "inter_bw": "no second node: same as intra", "inter_latency_s": "no second node: same as intra",
      "comm_eff": "1: the collective table is achieved rates", "offload_bw": "host memory: same as mem_bw",
      "op_overhead_s": "measured: chain of 64 dependent 8x8 matmuls in one jit, per matmul",
      "step_overhead_s": "measured: dispatch of a jitted step on a donated state plus a host sync",
      "host_shared_compute": "simulated devices share this host's cores",
      "overlap_eff":
      "0: on simulated CPU devices communication is memory copies on the same cores (no overlap)",
      "kernels": "this repository's CPU lowering",
      "probe_s": "measured: calibrate.speed_probe('load'), 2 s back-to-back at calibration time",
      "source": "calibration run", "name": "this machine",
      "gemm_table": "measured float32 GEMM rate [M, K, N, FLOP/s]: R products per jit, less op_overhead_s",
      "collective_table": f"measured on {devices} simulated CPU devices: kind: [latency_s, bytes/s per device]",
      "residual_s_per_byte": "measured: scanned SwiGLU stacks, grad - fwd - modelled bwd per saved byte",
      "recompute_ratio": "measured: the same stacks under full remat, (grad - fwd - modelled bwd) / fwd",
  }


def _host_memory_gb() -> float:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
  except (ValueError, OSError, AttributeError):
    return 16.0


def calibrate_to_file(path: str, devices: int = 8, progress=None, quick: bool = False):
  hw, notes = calibrate(devices, progress, quick)
  write_hardware_file(hw, path, notes, "This machine, calibrated by `python -m pangu_jax.simulate --calibrate` "
                      "(microbenchmarks only).")
  return hw
