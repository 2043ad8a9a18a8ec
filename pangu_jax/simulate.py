"""`python -m pangu_jax.simulate`: predict step time, tokens/s, MFU and memory before paying for a run.

Modes (docs/contracts.md):
  --config=F --hardware=H [--plan=k=v,...] [--json]   one plan (keys: tp pp vpp ep dp mbs gbs seq devices remat
                                                       hier_a2a overlap tp_extend_ep dtype; defaults from F)
  --config=F --hardware=H --search [--json]            ranked fitting plans (fixed keys from --plan);
                                                       --search_arch adds the paper's architecture comparison
  --calibrate --out=FILE                               measure this machine, write a hardware file
  --validate [--json]                                  calibrate, run the real trainer on small configs, compare
  --published [--published_set=F] [--json]             predict published training runs (configs/published/)
                                                       and compare: error per row, median, ranking per group
With --json the last stdout line is one JSON object. See docs/simulator.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import flags
from ml_collections import config_flags
from tqdm import tqdm

import confspec
from pangu_jax.config import validate_config

CONTRACT_KEYS = ("mfu", "tokens_per_s", "step_time_s", "memory_per_device_gb", "fits")


def _bar(total, desc):
  return tqdm(total=total, desc=desc, file=sys.stderr, disable=not _PROGRESS.value, dynamic_ncols=True)


def _summary(r) -> str:
  p = r["plan"]
  plan = ",".join(f"{k}={v}" for k, v in p.items())
  return (f"{plan}\n  tokens/s {r['tokens_per_s']:.4g}  MFU {r['mfu']:.3f}  step {r['step_time_s']:.3f}s  "
          f"memory {r['memory_per_device_gb']:.1f} GB  fits {r['fits']}")


def _plan_mode(cfg, hw):
  from pangu_jax.sim.plan import make_plan, parse_plan_string  # noqa: PLC0415
  from pangu_jax.sim.predict import predict  # noqa: PLC0415

  plan = make_plan(cfg, parse_plan_string(_PLAN.value))
  r = predict(cfg, hw, plan)
  print(_summary(r))
  for k, v in r["breakdown_s"].items():
    print(f"  {k:<18} {v:9.4f} s")
  print("  memory (GB): " + ", ".join(f"{k} {v:.2f}" for k, v in r["memory_gb"].items() if k != "stage"))
  if _JSON.value:
    print(json.dumps(r))


def _search_mode(cfg, hw):
  from pangu_jax.sim.plan import parse_plan_string  # noqa: PLC0415
  from pangu_jax.sim.search import search_architectures, search_plans  # noqa: PLC0415

  fixed = parse_plan_string(_PLAN.value)
  fixed.setdefault("devices", cfg.parallel.data * cfg.parallel.tensor * cfg.parallel.stage)
  bar = _bar(None, "plans")
  ranked = search_plans(cfg, hw, fixed, progress=lambda i, n: (setattr(bar, "total", n), bar.update(i - bar.n)))
  bar.close()
  for i, r in enumerate(ranked[:_TOP.value]):
    print(f"#{i + 1} " + _summary(r))
  out = {"results": [{k: r[k] for k in CONTRACT_KEYS + ("plan",)} for r in ranked[:_TOP.value]],
         "plans_fitting": len(ranked)}
  if ranked:
    out.update({k: ranked[0][k] for k in CONTRACT_KEYS + ("plan",)})
  if _SEARCH_ARCH.value:
    bar = _bar(6, "architectures")
    out["architectures"] = search_architectures(cfg, hw, {k: v for k, v in fixed.items() if k in (
        "devices", "gbs", "seq", "dtype", "hier_a2a", "overlap")}, progress=lambda i, n: bar.update(1))
    bar.close()
    for a in out["architectures"]:
      b = a["best"]
      print(f"{a['name']:<22} best tokens/s {b['tokens_per_s'] if b else 0:.4g}  MFU {b['mfu'] if b else 0:.3f}")
  if _JSON.value:
    for r in out["results"]:
      print(json.dumps(r))
    print(json.dumps(out))


def _calibrate_mode():
  from pangu_jax.sim.calibrate import calibrate_to_file  # noqa: PLC0415

  if not _OUT.value:
    raise confspec.ConfigError("--out: required with --calibrate (the hardware file to write)")
  bar = _bar(None, "gemm shapes")
  hw = calibrate_to_file(_OUT.value, _DEVICES.value,
                         progress=lambda i, n: (setattr(bar, "total", n), bar.update(i - bar.n)), quick=_QUICK.value)
  bar.close()
  print(f"wrote {_OUT.value}: float32 GEMM peak {hw.matmul_peak['float32'] / 1e9:.1f} GFLOP/s, memory "
        f"{hw.mem_bw / 1e9:.1f} GB/s")
  if _JSON.value:
    print(json.dumps({"out": _OUT.value, "hardware": hw.to_dict()}))


def _validate_mode():
  from pangu_jax.sim.calibrate import calibrate_to_file  # noqa: PLC0415
  from pangu_jax.sim.hardware import load_hardware  # noqa: PLC0415
  from pangu_jax.sim.validate import CONFIGS, validate  # noqa: PLC0415

  work = tempfile.mkdtemp(prefix="sim_validate_")
  path = _OUT.value or os.path.join(work, "this_machine.py")
  bar = _bar(None, "calibrate")
  calibrate_to_file(path, _DEVICES.value, progress=lambda i, n: (setattr(bar, "total", n), bar.update(i - bar.n)))
  bar.close()
  hw = load_hardware(path)
  names = _VALIDATE_CONFIGS.value or list(CONFIGS)
  bar = _bar(len(names), "validate")

  def report(i, n, row):
    bar.update(1)
    if "error" in row:
      bar.write(f"{row['name']:<24} FAILED: {row['error'][-300:]}")
      return
    bar.write(f"{row['name']:<24} predicted {row['predicted_s']:.4f}s  measured {row['measured_s']:.4f}s  "
              f"error {row['abs_error']:.3f}")

  r = validate(hw, names, progress=report, workdir=work)
  bar.close()
  for row in r["configs"]:
    if "error" in row:
      print(f"{row['name']:<24} FAILED (excluded from the median): {row['error'][-200:]}")
      continue
    print(f"{row['name']:<24} predicted {row['predicted_s']:.4f}s  measured {row['measured_s']:.4f}s  "
          f"abs_error {row['abs_error']:.3f}  (fastest interval {row['measured_min_s']:.4f}s, load factor "
          f"{row['load_factor']:.2f}, load-scaled error {row['abs_error_load_scaled']:.3f})")
  print(f"median abs error {r['median_abs_error']:.3f} over {len(r['configs'])} configs "
        f"(trainer shards: {r['trainer_shards']}); calibration: {path}")
  r["hardware_file"] = path
  if _JSON.value:
    print(json.dumps(r))


def _published_mode():
  from pangu_jax.sim.published import DEFAULT_SET, evaluate, load_set  # noqa: PLC0415

  rows = load_set(_PUBLISHED_SET.value or DEFAULT_SET)
  bar = _bar(len(rows), "published runs")
  r = evaluate(rows, progress=lambda i, n, row: bar.update(1))
  bar.close()
  print(f"{'run':<48} {'hardware':<9} {'devices':>7} {'predicted':>10} {'published':>10} {'ratio':>6} "
        f"{'memory GB':>10} fits")
  for row in r["runs"]:
    print(f"{row['name']:<48} {row['hardware']:<9} {row['devices']:>7} "
          f"{row['predicted_tokens_per_s_per_device']:>10.0f} {row['published_tokens_per_s_per_device']:>10.0f} "
          f"{row['ratio']:>6.2f} {row['memory_per_device_gb']:>6.1f}/{row['memory_limit_gb']:<3.0f} {row['fits']}")
  s = r["summary"]
  print(f"median |predicted/published - 1| {s['median_abs_error']:.3f} (target <= {s['targets']['median_abs_error']}), "
        f"largest {s['max_abs_error']:.3f} (target <= {s['targets']['max_abs_error']}); plans that ran predicted to "
        f"fit: {s['all_ran_fit']}" + (f" (not: {', '.join(s['not_fitting'])})" if s["not_fitting"] else ""))
  for g, v in s["ranking"].items():
    print(f"ranking {g}: Spearman rho {v['spearman_rho']:.2f} over {v['rows']} plans")
  print("meets the targets" if s["meets_targets"] else "misses the targets")
  if _JSON.value:
    print(json.dumps(r))


def main(argv):
  del argv
  if _PUBLISHED.value:
    return _published_mode()
  if _CALIBRATE.value:
    return _calibrate_mode()
  if _VALIDATE.value:
    return _validate_mode()
  if _CONFIG.value is None:
    raise confspec.ConfigError("--config: required (a Pangu config file) unless --calibrate or --validate")
  from pangu_jax.sim.hardware import load_hardware  # noqa: PLC0415

  cfg = validate_config(_CONFIG.value)
  hw = load_hardware(_HARDWARE.value)
  if _SEARCH.value:
    return _search_mode(cfg, hw)
  return _plan_mode(cfg, hw)


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Pangu config file (configs/pangu/*.py).")
  _HARDWARE = flags.DEFINE_string("hardware", "ascend_a2", "hardware file, or a name in configs/hardware/")
  _PLAN = flags.DEFINE_string("plan", "", "plan overrides k=v,... (see docs/simulator.md)")
  _SEARCH = flags.DEFINE_bool("search", False, "search plans (fixed keys from --plan) and rank them")
  _SEARCH_ARCH = flags.DEFINE_bool("search_arch", False, "with --search: also the architecture comparison")
  _TOP = flags.DEFINE_integer("top", 20, "plans printed by --search")
  _CALIBRATE = flags.DEFINE_bool("calibrate", False, "measure this machine and write --out")
  _OUT = flags.DEFINE_string("out", "", "output hardware file of --calibrate")
  _VALIDATE = flags.DEFINE_bool("validate", False, "calibrate, then compare predicted and measured step times")
  _VALIDATE_CONFIGS = flags.DEFINE_list("validate_configs", [], "subset of validation configs (default: all)")
  _DEVICES = flags.DEFINE_integer("calibrate_devices", 8, "simulated CPU devices for the collective benchmarks")
  _PUBLISHED = flags.DEFINE_bool("published", False, "predict the published training runs and compare")
  _PUBLISHED_SET = flags.DEFINE_string("published_set", "", "development set (default: configs/published/runs.json)")
  _JSON = flags.DEFINE_bool("json", False, "print one JSON object as the last line")
  _QUICK = flags.DEFINE_bool("quick", False, "with --calibrate: shorter microbenchmarks (smoke runs, noisier figures)")
  _PROGRESS = flags.DEFINE_bool("progress", True, "progress bars on stderr")
  confspec.run(main)
