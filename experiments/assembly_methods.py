"""Experiment driver over seeds: PEAD (RL alone / + compliance / + PEAD) and LCRL (local vs global policy).

    python -m experiments.assembly_methods --out=results/pead_l_shape [--config.ppo_env_steps=1000000] ...
    python -m experiments.assembly_methods --out=results/lcrl_square --config.peg=square --config.algos=ppo \
        --config.variants=rl_compliance,rl_compliance_lcrl --config.ppo_env_steps=120000

Variants: `rl_alone` (no compliance), `rl_compliance` (the globally connected
agent), `rl_compliance_pead`, `rl_compliance_lcrl` (LCRL: each action
component's sub-network sees only its connected state components, from
`lcrl_graph`, a CS3 connection_graph.json; experiments.cs3) and
`rl_compliance_lcrl_full` (the same per-component sub-networks with every
connection: separates the effect of locality from that of the architecture).

Each (algorithm, variant) is one `control_brax.train` run under
`<out>/runs/<algo>_<variant>/` with `seeds` seeds vmapped in one program, so the
driver is resumable across sessions: re-running it resumes unfinished runs
from their checkpoints and skips finished ones. Then it aggregates every run's
metrics.jsonl into `<out>/results.json`, `<out>/report.md` (table with 95%
bootstrap intervals over seeds) and plots (`learning_curves.png`,
`steps_to_80.png`).

Figures per seed: env steps and wall time to 80% evaluation success (the first
evaluation at or above 0.8; "not reached" counts are reported), final success
rate, final evaluation return, mean assembly (insertion) time over successful
episodes and mean peak contact force at the last evaluation. Wall time is the
vmapped program's (all seeds at once), comparable between variants because every run has the same number of seeds.
"""

from __future__ import annotations

import json
import os
import sys
import time

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

import confspec
from control_brax.rl.config import base_rl_config
from runkit.atomic import atomic_write
from runkit.metrics import read_metrics
from runkit.stats import mean_ci

VARIANTS = ("rl_alone", "rl_compliance", "rl_compliance_pead", "rl_compliance_lcrl", "rl_compliance_lcrl_full")
PEAD_VARIANTS = VARIANTS[:3]


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.peg = "l_shape"
  c.algos = "ppo,ddpg"
  c.variants = ",".join(PEAD_VARIANTS)
  c.seeds = 5
  c.ppo_env_steps = 1_000_000  # per seed (the default budget)
  c.ddpg_env_steps = 300_000
  c.evals_per_run = 10
  c.eval_envs = 64  # evaluation episodes per seed per evaluation
  # translational x/y tied, tilts tied, z and yaw alone; then one output per axis (a `pead.stages` value)
  c.pead_stages = ((("x", "y"), ("z",), ("rx", "ry"), ("rz",)), ())
  c.pead_switch_fraction = 0.25  # switch after this fraction of the budget
  c.success_threshold = 0.8
  c.notes = ""  # free text printed in the report (e.g. what else shared the machine)
  c.lcrl_graph = "results/cs3_{peg}/connection_graph.json"  # LCRL connection graph ({peg} = the peg's name)
  c.run_overrides = "{}"  # JSON merged into every run's config, e.g. '{"ppo": {"num_envs": 64}}'
  return c


def _merge(c, over: dict, path: str = "run_overrides"):
  for k, v in over.items():
    if k not in c:
      raise ValueError(f"{path}.{k}: not a field of the run config")
    if isinstance(v, dict):
      _merge(c[k], v, f"{path}.{k}")
    else:
      c[k] = type(c[k])(v) if isinstance(c[k], (int, float, str, bool)) and not isinstance(v, list) else v


def run_config(exp, algo: str, variant: str) -> ml_collections.ConfigDict:
  """The train config of one (algorithm, variant) run."""
  c = base_rl_config(algo)
  c.env.peg = exp.peg
  budget = exp.ppo_env_steps if algo == "ppo" else exp.ddpg_env_steps
  c.train.total_env_steps = budget
  c.train.eval_every_steps = max(budget // exp.evals_per_run, 1)
  c.train.checkpoint_every_steps = max(budget // 5, 1)
  c.train.num_seeds = exp.seeds
  c.train.eval_envs = exp.eval_envs
  c.env.compliance = variant != "rl_alone"
  if variant == "rl_compliance_pead":
    c.pead.enabled = True
    c.pead.stages = exp.pead_stages
    n_switch = len(exp.pead_stages) - 1
    c.pead.switch_steps = tuple(int(budget * exp.pead_switch_fraction * (i + 1)) for i in range(n_switch))
  if variant == "rl_compliance_lcrl":
    c[algo].lcrl_graph = exp.lcrl_graph.format(peg=exp.peg)
  if variant == "rl_compliance_lcrl_full":
    c[algo].lcrl_graph = "full"
  _merge(c, json.loads(exp.run_overrides))
  return c


def per_seed(workdir: str, threshold: float) -> dict:
  """Per-seed figures of one run from its metrics.jsonl."""
  evals = [r for r in read_metrics(workdir) if "eval_success_rate_per_seed" in r]
  if not evals:
    raise FileNotFoundError(f"{workdir}: no evaluation lines in metrics.jsonl")
  n = len(evals[0]["eval_success_rate_per_seed"])
  steps_to, wall_to = [None] * n, [None] * n
  for r in evals:
    for s, x in enumerate(r["eval_success_rate_per_seed"]):
      if steps_to[s] is None and x >= threshold:
        steps_to[s], wall_to[s] = r["env_steps"], r["wall_s"]
  last = evals[-1]
  ins = last.get("eval_insertion_time_s_per_seed", [None] * n)  # older runs logged only the mean over seeds
  return {"insertion_time_s": ins,
          "steps_to_80": steps_to, "wall_s_to_80": wall_to, "final_success_rate": last["eval_success_rate_per_seed"],
          "final_return": last.get("eval_return_per_seed", [last["eval_return"]] * n),
          "peak_force_n": last.get("eval_peak_force_n_per_seed", [last["eval_peak_force_n"]] * n),
          "curve": {"env_steps": [r["env_steps"] for r in evals],
                    "success": [r["eval_success_rate_per_seed"] for r in evals]},
          "env_steps": last["env_steps"], "wall_s": last["wall_s"]}


def summarize(seeds: dict) -> dict:
  keys = ("steps_to_80", "wall_s_to_80", "final_success_rate", "final_return", "insertion_time_s", "peak_force_n")
  out = {k: mean_ci(seeds.get(k, [])) for k in keys}
  out["reached_80"] = f"{sum(x is not None for x in seeds['steps_to_80'])}/{len(seeds['steps_to_80'])}"
  return out


def _fmt(s: dict, scale: float = 1.0, digits: int = 2, none: str = "not reached") -> str:
  if s["mean"] is None:
    return none
  lo, hi = s["ci95"]
  return f"{s['mean'] * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def plots(results: dict, out: str) -> list[str]:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  algos = sorted({k.split("/")[0] for k in results})
  fig, axes = plt.subplots(1, len(algos), figsize=(5.5 * len(algos), 3.8), squeeze=False)
  for ax, algo in zip(axes[0], algos):
    for key, r in sorted(results.items()):
      if not key.startswith(algo + "/"):
        continue
      x = np.asarray(r["seeds"]["curve"]["env_steps"])
      y = np.asarray(r["seeds"]["curve"]["success"])
      ax.plot(x, y.mean(1), label=key.split("/")[1])
      ax.fill_between(x, y.min(1), y.max(1), alpha=0.15)
    ax.set_title(f"{algo.upper()}: evaluation success (mean, min-max over seeds)", fontsize=9)
    ax.set_xlabel("env steps per seed")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
  fig.tight_layout()
  p1 = os.path.join(out, "learning_curves.png")
  fig.savefig(p1, dpi=100)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(7, 3.5))
  keys = sorted(results)
  means = [results[k]["summary"]["steps_to_80"]["mean"] or 0 for k in keys]
  errs = [[(m - (results[k]["summary"]["steps_to_80"]["ci95"][0] or m)) for k, m in zip(keys, means)],
          [((results[k]["summary"]["steps_to_80"]["ci95"][1] or m) - m) for k, m in zip(keys, means)]]
  ax.bar(range(len(keys)), means, yerr=errs, capsize=3)
  ax.set_xticks(range(len(keys)), [k.replace("/", "\n") for k in keys], fontsize=7)
  ax.set_ylabel("env steps to 80% success")
  fig.tight_layout()
  p2 = os.path.join(out, "steps_to_80.png")
  fig.savefig(p2, dpi=100)
  plt.close(fig)
  return [p1, p2]


def _compare(a: dict, b: dict, lower_is_better: bool) -> str:
  """'confirmed' if a beats b with non-overlapping intervals, 'not confirmed' if b beats a so, else 'inconclusive'."""
  if a["mean"] is None or b["mean"] is None:
    return "inconclusive (not reached)"
  (alo, ahi), (blo, bhi) = a["ci95"], b["ci95"]
  better = ahi < blo if lower_is_better else alo > bhi
  worse = alo > bhi if lower_is_better else ahi < blo
  return "confirmed" if better else ("contradicted" if worse else "inconclusive (intervals overlap)")


def claims(results: dict) -> list[str]:
  """One line per claim, per algorithm: PEAD and LCRL each against the global RL + compliance agent, and RL +
  compliance against RL alone."""
  out = []
  for algo in sorted({k.split("/")[0] for k in results}):
    pead, comp, alone = (results.get(f"{algo}/{v}", {}).get("summary") for v in
                         ("rl_compliance_pead", "rl_compliance", "rl_alone"))
    if pead and comp:
      for name, key, low in (("data efficiency (env steps to 80%)", "steps_to_80", True),
                             ("time efficiency (wall s to 80%)", "wall_s_to_80", True),
                             ("higher final reward", "final_return", False),
                             ("more compliant (lower peak force)", "peak_force_n", True)):
        ratio = ""
        if pead[key]["mean"] and comp[key]["mean"]:
          ratio = f" (PEAD / no PEAD = {pead[key]['mean'] / comp[key]['mean']:.2f})"
        out.append(f"- {algo.upper()}, PEAD {name}: {_compare(pead[key], comp[key], low)}{ratio}")
    if comp and alone:
      for name, key, low in (("faster convergence than RL alone (env steps to 80%)", "steps_to_80", True),
                             ("higher final success than RL alone", "final_success_rate", False),
                             ("lower peak force than RL alone", "peak_force_n", True)):
        out.append(f"- {algo.upper()}, RL + compliance {name}: {_compare(comp[key], alone[key], low)}")
    for variant, label in (("rl_compliance_lcrl", "LCRL"), ("rl_compliance_lcrl_full", "per-component, fully "
                                                                                         "connected")):
      local = results.get(f"{algo}/{variant}", {}).get("summary")
      if not (local and comp):
        continue
      unfinished = [f"{k} at {r['seeds']['env_steps']:,} of {r['budget']:,} env steps" for k, r in
                    ((f"{algo}/{v}", results[f"{algo}/{v}"]) for v in (variant, "rl_compliance"))
                    if "env_steps" in r["seeds"] and r["seeds"]["env_steps"] < r.get("budget", 0)]
      # steps to 80% are final once every seed of both runs has crossed (the first crossing cannot change)
      crossed = all(x is not None for v in (variant, "rl_compliance")
                    for x in results[f"{algo}/{v}"]["seeds"]["steps_to_80"])
      if unfinished:
        out.append(f"- {algo.upper()}, {label} vs global, final figures: not judged yet ({'; '.join(unfinished)}); "
                   "see the same-env-steps table")
      for name, key, low in (("data efficiency (env steps to 80%)", "steps_to_80", True),
                             ("time efficiency (wall s to 80%)", "wall_s_to_80", True),
                             ("higher final reward", "final_return", False),
                             ("higher final success", "final_success_rate", False),
                             ("faster assembly (insertion time)", "insertion_time_s", True),
                             ("more stable (lower peak force)", "peak_force_n", True)):
        if unfinished and not (key in ("steps_to_80", "wall_s_to_80") and crossed):
          continue
        ratio = ""
        if local[key]["mean"] and comp[key]["mean"]:
          ratio = f" ({label} / global = {local[key]['mean'] / comp[key]['mean']:.2f})"
        out.append(f"- {algo.upper()}, {label} vs global {name}: {_compare(local[key], comp[key], low)}{ratio}")
  return out


def matched_success(results: dict) -> list[str]:
  """Evaluation success of each LCRL/PEAD variant against the global agent at the same env steps (learning curves
  compared point by point; also usable while a run is unfinished)."""
  lines = []
  for key, r in sorted(results.items()):
    algo, variant = key.split("/")
    base = results.get(f"{algo}/rl_compliance")
    if variant in ("rl_compliance", "rl_alone") or base is None:
      continue
    a, b = r["seeds"]["curve"], base["seeds"]["curve"]
    common = sorted(set(a["env_steps"]) & set(b["env_steps"]))
    if not common:
      continue
    lines += [f"### Evaluation success at the same env steps: {key} vs {algo}/rl_compliance", "",
              "| env steps per seed | " + variant + " | rl_compliance (global) |", "|---|---|---|"]
    for x in common:
      sa = mean_ci(a["success"][a["env_steps"].index(x)])
      sb = mean_ci(b["success"][b["env_steps"].index(x)])
      lines.append(f"| {x:,} | {_fmt(sa)} | {_fmt(sb)} |")
    lines.append("")
  return lines


def report(exp, results: dict, out: str) -> str:
  variants = {k.split("/")[1] for k in results} | {v.strip() for v in exp.variants.split(",") if v.strip()}
  lcrl = any(v.startswith("rl_compliance_lcrl") for v in variants)
  title = "LCRL experiment" if lcrl and "rl_compliance_pead" not in variants else "PEAD experiment"
  lines = [f"# {title} on `{exp.peg}`", "", f"{exp.seeds} seeds per run, vmapped in one program. "
           + (f"PEAD stages `{exp.pead_stages}` switching at {exp.pead_switch_fraction:.0%} of the budget. "
              if "rl_compliance_pead" in variants else "")
           + (f"LCRL connection graph `{exp.lcrl_graph.format(peg=exp.peg)}`. " if lcrl else "")
           + "Mean and 95% bootstrap interval over seeds.", "",
           "| algo / variant | env steps done / budget (per seed) | reached 80% | env steps to 80% "
           "| wall s to 80% (all seeds) | final success | final return | assembly time (s) | peak force (N) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for key, r in sorted(results.items()):
    s = r["summary"]
    done = r["seeds"].get("env_steps", r.get("budget", 0))
    lines.append(f"| {key} | {done:,} / {r.get('budget', 0):,} | {s['reached_80']} | "
                 f"{_fmt(s['steps_to_80'], digits=0)} | {_fmt(s['wall_s_to_80'], digits=0)} | "
                 f"{_fmt(s['final_success_rate'])} | "
                 f"{_fmt(s['final_return'], digits=1)} | {_fmt(s['insertion_time_s'], digits=3, none='n/a')} | "
                 f"{_fmt(s['peak_force_n'], digits=1)} |")
  if exp.get("notes"):
    lines += ["", f"Note: {exp.notes}"]
  lines += ["", "## The papers' claims against these figures", ""] + claims(results) + [""]
  lines += matched_success(results)
  lines += ["![learning curves](learning_curves.png)", "", "![steps to 80%](steps_to_80.png)", ""]
  return atomic_write(os.path.join(out, "report.md"), "\n".join(lines))


def aggregate(exp, out: str) -> dict:
  """Results, report and plots over every run under `<out>/runs` (whichever call trained it)."""
  results = {}
  for algo in ("ppo", "ddpg"):
    for variant in VARIANTS:
      workdir = os.path.join(out, "runs", f"{algo}_{variant}")
      if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        continue
      with open(os.path.join(workdir, "config.json")) as f:
        budget = json.load(f)["train"]["total_env_steps"]
      try:
        seeds = per_seed(workdir, exp.success_threshold)
      except FileNotFoundError:  # a run started but not yet evaluated
        continue
      results[f"{algo}/{variant}"] = {"seeds": seeds, "summary": summarize(seeds), "budget": budget}
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"config": exp.to_dict(), "results": results}, f, indent=1)
  paths = plots(results, out)
  rep = report(exp, results, out)
  return {"results": {k: v["summary"] for k, v in results.items()}, "report": rep, "plots": paths}


def run(exp, out: str, log=None, progress: bool = True) -> dict:
  """Trains (or resumes) the requested runs, then aggregates every run under `out`."""
  from control_brax.train import exit_if_signalled, train  # noqa: PLC0415

  log = log or (lambda m: print(m, file=sys.stderr, flush=True))
  os.makedirs(out, exist_ok=True)
  for algo in [a.strip() for a in exp.algos.split(",") if a.strip()]:
    for variant in [v.strip() for v in exp.variants.split(",") if v.strip()]:
      if variant not in VARIANTS:
        raise ValueError(f"variants: {variant!r} is not one of {', '.join(VARIANTS)}")
      workdir = os.path.join(out, "runs", f"{algo}_{variant}")
      t0 = time.time()
      log(f"== {algo} / {variant} -> {workdir}")
      summary = train(run_config(exp, algo, variant), workdir, log=log, progress=progress)
      exit_if_signalled(summary)  # stopped (and saved) by a signal: stop here, re-running resumes
      log(f"== {algo} / {variant}: {summary['status']} after {time.time() - t0:.0f} s this session")
  return aggregate(exp, out)


def main(argv):
  del argv
  res = run(_CONFIG.value, _OUT.value, progress=_PROGRESS.value)
  print(json.dumps({k: {m: v[m]["mean"] for m in ("steps_to_80", "final_success_rate")}
                    for k, v in res["results"].items()}))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  with confspec.flag_errors():  # a default config applies the --config.a.b=v overrides as it is defined
    _CONFIG = config_flags.DEFINE_config_dict("config", default_config(), "Experiment settings (override with "
                                              "--config.x=y).")
  _OUT = flags.DEFINE_string("out", "results/pead_l_shape", "Results directory (resumable).")
  _PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars on stderr.")
  confspec.run(main)
