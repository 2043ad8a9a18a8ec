"""`simulate --validate`: run the real trainer on small configs and compare measured with predicted step time.

The configs below were never used for calibration (calibration is microbenchmarks only, calibrate.py). Each
runs `pangu_jax.train.loop.train` in a subprocess (8-device ones with XLA_FLAGS set before JAX starts) for
16 steps logged every 2; the measured step time is the median of the log intervals after the first (which holds
warm-up). This host is shared (2 cores, other jobs), so the calibration measures sustained rates (back-to-back
calls, not best-of windows), the rate a training run gets; a speed probe around each run over the same probe at
calibration (`load_factor`) shows the load's drift, and the prediction scaled by it is reported beside
(`abs_error_load_scaled`).

Multi-device configs: when the trainer shards (`pangu_jax.parallel` importable, issue #6), the plan is
(dp = data * expert, ep = expert, tp = tensor) on simulated devices sharing this host's cores; before that the
trainer runs the whole batch unsharded on one device, and the prediction says so (plan devices = 1).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from pangu_jax.config import base_config, validate_config
from pangu_jax.sim.calibrate import speed_probe
from pangu_jax.sim.plan import make_plan
from pangu_jax.sim.predict import predict

# name -> (model overrides, train overrides, parallel overrides, devices)
CONFIGS = {
    "tiny_1dev": ({}, dict(batch_size=16, seq_len=128), {}, 1),
    "wide_1dev": (dict(hidden_size=256, q_lora_rank=96, kv_lora_rank=48, expert_ffn_dim=128, dense_ffn_dim=512,
                       num_layers=3), dict(batch_size=8, seq_len=128), {}, 1),
    "deep_full_remat_1dev": (dict(num_layers=8), dict(batch_size=8, seq_len=128), dict(remat="full"), 1),
    "e32_top4_1dev": (dict(num_routed_experts=32, top_k=4, expert_ffn_dim=64), dict(batch_size=8, seq_len=128), {},
                      1),
    "e16_top1_noshared_1dev": (dict(num_routed_experts=16, top_k=1, num_shared_experts=0),
                               dict(batch_size=16, seq_len=64), {}, 1),
    "dp8_8dev": ({}, dict(batch_size=16, seq_len=128), dict(data=8), 8),
    "dp2_ep4_8dev": ({}, dict(batch_size=16, seq_len=128), dict(data=2, expert=4), 8),
    "dp4_tp2_8dev": ({}, dict(batch_size=16, seq_len=128), dict(data=4, tensor=2), 8),
}
STEPS, LOG_EVERY = 16, 2


def trainer_shards() -> bool:
  """Whether the trainer honours cfg.parallel (issue #6 landed)."""
  return importlib.util.find_spec("pangu_jax.parallel") is not None


def build_config(name: str, steps: int = STEPS, log_every: int = LOG_EVERY):
  model, train, parallel, _ = CONFIGS[name]
  cfg = base_config()
  cfg.model.update(model)
  cfg.train.update(dict(steps=steps, log_every=log_every, eval_every=100000, checkpoint_every=100000,
                        eval_batches=1, ep_group_size=1, warmup_steps=5), **train)
  cfg.parallel.update(parallel)
  return validate_config(cfg)


def plan_for(cfg, devices: int, sharded: bool):
  par = cfg.parallel
  if devices == 1 or not sharded:
    over = dict(tp=1, pp=1, vpp=1, ep=1, dp=1, devices=1)
  else:
    over = dict(tp=par.tensor, pp=1, vpp=1, ep=par.expert, dp=par.data * par.expert, devices=devices)
  over.update(mbs=cfg.train.batch_size // over["dp"], gbs=cfg.train.batch_size, seq=cfg.train.seq_len,
              dtype=cfg.model.dtype, overlap=False, remat=par.remat)
  return make_plan(cfg, over)


_RUN = r"""
import json, sys
import ml_collections
from pangu_jax.train.loop import train
cfg = ml_collections.ConfigDict(json.load(open(sys.argv[1])))
train(cfg, sys.argv[2], progress=False, log=lambda m: None)
"""


def run_trainer(cfg, devices: int, workdir: str, timeout: float = 900) -> dict:
  """Measured seconds per step (steady state: median and fastest interval) of the real trainer."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "cfg.json")
  with open(path, "w") as f:
    f.write(cfg.to_json())
  env = dict(os.environ)
  if devices > 1:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", _RUN, path, os.path.join(workdir, "run")], env=env,
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    raise RuntimeError(f"trainer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  with open(os.path.join(workdir, "run", "metrics.jsonl")) as f:
    lines = [json.loads(x) for x in f if x.strip()]
  tokens = cfg.train.batch_size * cfg.train.seq_len
  return {"median": steady_step_time(lines, tokens), "min": steady_step_time(lines, tokens, "min")}


def steady_step_time(lines: list, tokens_per_step: int, stat: str = "median") -> float:
  """Step time over the training log lines after the first (warm-up) interval: their median, or their minimum
  (the least-loaded interval, the counterpart of the calibration's fastest-window timings)."""
  rates = [r["tokens_per_s"] for r in lines if "tokens_per_s" in r]
  steady = rates[1:] if len(rates) > 1 else rates
  times = [tokens_per_step / r for r in steady]
  return min(times) if stat == "min" else statistics.median(times)


def validate(hw, names=None, progress=None, workdir=None) -> dict:
  """Predicted and measured step time of each config; median absolute relative error."""
  names = list(names or CONFIGS)
  sharded = trainer_shards()
  rows = []
  root = workdir or tempfile.mkdtemp(prefix="sim_validate_")
  for i, name in enumerate(names):
    cfg = build_config(name)
    devices = CONFIGS[name][3]
    plan = plan_for(cfg, devices, sharded)
    raw = predict(cfg, hw, plan)["step_time_s"]
    t0 = time.perf_counter()
    before = speed_probe("load") if hw.probe_s else 0.0
    try:
      meas = run_trainer(cfg, devices, os.path.join(root, name))
    except (RuntimeError, subprocess.TimeoutExpired) as e:  # one broken config must not hide the others
      rows.append({"name": name, "devices": devices, "predicted_s": raw, "error": str(e)[-2000:]})
      if progress:
        progress(i + 1, len(names), rows[-1])
      continue
    after = speed_probe("load") if hw.probe_s else 0.0
    load = 0.5 * (before + after) / hw.probe_s if hw.probe_s else 1.0
    rows.append({"name": name, "devices": devices, "sharded": bool(sharded and devices > 1), "predicted_s": raw,
                 "measured_s": meas["median"], "abs_error": abs(raw - meas["median"]) / meas["median"],
                 "measured_min_s": meas["min"], "load_factor": load,
                 "abs_error_load_scaled": abs(raw * load - meas["median"]) / meas["median"],
                 "wall_s": time.perf_counter() - t0})
    if progress:
      progress(i + 1, len(names), rows[-1])
  ok = [r for r in rows if "abs_error" in r]
  nan = float("nan")
  return {"configs": rows, "median_abs_error": statistics.median(r["abs_error"] for r in ok) if ok else nan,
          "median_abs_error_load_scaled": statistics.median(r["abs_error_load_scaled"] for r in ok) if ok else nan,
          "configs_failed": len(rows) - len(ok), "trainer_shards": sharded}
