"""The simulator against published training runs: `python -m pangu_jax.simulate --published`.

The development set is data (`configs/published/runs.json`): each row names a model config file, a hardware file,
the plan in our keys (`--plan` syntax), the plan as its source states it, the published throughput per device
with how it was derived, the source, and which plan keys the source does not state (our assumption for each).
Hardware constants come from the hardware files (datasheets and generic efficiency assumptions written before
any comparison); nothing is fitted per row.

Reported per row: predicted and published tokens/s per device, their ratio, predicted memory and whether it
fits. Over the set: the median and the largest |predicted / published - 1|, whether every plan that ran is
predicted to fit, and per group of rows (one model on one cluster) Spearman's rho between predicted and published
throughput (scipy.stats.spearmanr), with the issue's targets (median <= 0.15, every row <= 0.30, rho = 1).
"""

from __future__ import annotations

import json
import os
import statistics

from confspec import ConfigError, load_config_file
from pangu_jax.config import validate_config
from pangu_jax.sim.hardware import load_hardware
from pangu_jax.sim.plan import make_plan, parse_plan_string
from pangu_jax.sim.predict import predict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SET = os.path.join(REPO, "configs", "published", "runs.json")
ROW_KEYS = ("name", "group", "model", "hardware", "plan", "published_plan", "published_tokens_per_s_per_device",
            "derivation", "source", "ran")
TARGETS = {"median_abs_error": 0.15, "max_abs_error": 0.30}


def load_set(path: str = DEFAULT_SET) -> list:
  """The rows of a development-set file, each checked for the keys above (one line naming the row and key)."""
  try:
    with open(path) as f:
      rows = json.load(f)["runs"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"--published_set: {path}: not a development set ({type(e).__name__}: {e})") from None
  for i, row in enumerate(rows):
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
      raise ConfigError(f"--published_set: row {i} ({row.get('name', '?')}): missing {', '.join(missing)}")
    if not row["published_tokens_per_s_per_device"] > 0:
      raise ConfigError(f"--published_set: row {row['name']}: published_tokens_per_s_per_device must be > 0")
  return rows


def _model(path: str, cache: dict):
  full = path if os.path.isabs(path) else os.path.join(REPO, path)
  if full not in cache:
    cache[full] = validate_config(load_config_file(full, what="published model"))
  return cache[full]


def predict_row(row: dict, cache: dict | None = None) -> dict:
  cache = {} if cache is None else cache
  cfg = _model(row["model"], cache)
  hw = load_hardware(row["hardware"])
  plan = make_plan(cfg, parse_plan_string(row["plan"]))
  r = predict(cfg, hw, plan)
  per_dev = r["tokens_per_s"] / plan.devices
  pub = float(row["published_tokens_per_s_per_device"])
  return {"name": row["name"], "group": row["group"], "hardware": row["hardware"], "devices": plan.devices,
          "predicted_tokens_per_s_per_device": per_dev, "published_tokens_per_s_per_device": pub,
          "ratio": per_dev / pub, "abs_error": abs(per_dev / pub - 1),
          "memory_per_device_gb": r["memory_per_device_gb"],
          "memory_limit_gb": hw.memory_gb, "fits": r["fits"], "ran": bool(row["ran"]), "mfu": r["mfu"],
          "breakdown_s": r["breakdown_s"], "plan": row["plan"]}


def spearman(xs, ys) -> float:
  from scipy.stats import spearmanr  # noqa: PLC0415

  return float(spearmanr(xs, ys).statistic)


def evaluate(rows: list, progress=None) -> dict:
  """Predictions for every row and the summary against the targets."""
  cache: dict = {}
  out = []
  for i, row in enumerate(rows):
    out.append(predict_row(row, cache))
    if progress:
      progress(i + 1, len(rows), out[-1])
  errs = [r["abs_error"] for r in out]
  groups = {}
  for r in out:
    groups.setdefault(r["group"], []).append(r)
  ranks = {}
  for g, rs in groups.items():
    if len(rs) < 2:
      continue
    ranks[g] = {"rows": len(rs), "spearman_rho": spearman([r["published_tokens_per_s_per_device"] for r in rs],
                                                          [r["predicted_tokens_per_s_per_device"] for r in rs])}
  summary = {"rows": len(out), "median_abs_error": statistics.median(errs), "max_abs_error": max(errs),
             "all_ran_fit": all(r["fits"] for r in out if r["ran"]),
             "not_fitting": [r["name"] for r in out if r["ran"] and not r["fits"]],
             "ranking": ranks, "targets": TARGETS}
  summary["meets_targets"] = bool(summary["median_abs_error"] <= TARGETS["median_abs_error"]
                                  and summary["max_abs_error"] <= TARGETS["max_abs_error"]
                                  and summary["all_ran_fit"]
                                  and all(v["spearman_rho"] >= 1 - 1e-9 for v in ranks.values()))
  return {"runs": out, "summary": summary}
