"""`python -m experiments.transfer --source=G1 --target=G2 [--seeds=N] [--budget_steps=S] [--json]`.

Transfers an RL + compliance controller from peg geometry A (`--source`) to B
(`--target`), each a peg name or a peg parameter file, and compares four ways to get
a controller for B, over `--seeds` seeds (PPO; docs/control_brax_transfer.md):

* `scratch`: a fresh agent trained on B, with A's compliance parameters;
* `finetune`: A's teacher fine-tuned on B, with A's compliance parameters;
* `etcl`: A's teacher fine-tuned on B, with the compliance reconfigured by ETCL
  (control_brax.etcl);
* `etcl_wdpd`: a student distilled from A's teacher by WDPD (control_brax.wdpd) on
  B's observations, fine-tuned on B with ETCL's compliance. The distillation's
  env steps and wall time count toward its steps and time to 80%.

Seed i of every method uses teacher seed i. Per seed: env steps and wall time to
80% evaluation success (0 when the starting policy already reaches it; null when
the budget ends first), final evaluation success rate and mean peak contact
force. The JSON (docs/contracts.md) gives each as the median over seeds with a 95%
percentile-bootstrap interval (a seed that never reached 80% counts as infinitely
slow: the median is null when half the seeds did not reach it).

Everything lives under `--out` (default `results/transfer_<A>_<B>`): the teacher
under `teacher/`, each method under `runs/<method>/` (control_brax.train
workdirs); re-running the command resumes unfinished runs and skips finished ones.
Then `results.json`, `report.md` and plots are written.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

import confspec
from confspec import ConfigError, Field, defaults, validate
from control_brax import etcl, wdpd
from control_brax.config import load_peg
from control_brax.rl import networks as nets
from control_brax.rl import rollout
from control_brax.rl.config import base_rl_config, validate_rl
from control_brax.rl.normalize import normalize
from runkit.atomic import atomic_write, make_dir
from runkit.metrics import read_metrics
from runkit.stats import median_ci

METHODS = ("scratch", "finetune", "etcl", "etcl_wdpd")
# v2: the law the committed comparisons ran with (both v2 and v3 pass the ETCL check; docs/control_brax_transfer.md)
ETCL_LAW = "torque"
THRESHOLD = 0.8

TRANSFER_SCHEMA = {
    "seeds": Field(int, 3, lo=1, doc="seeds per method"),
    "budget_steps": Field(int, 81920, lo=1, doc="env steps on the target per seed"),
    "teacher_steps": Field(int, 122880, lo=1, doc="the teacher's env steps on the source per seed"),
    "distill_rollout_len": Field(int, 32, lo=1, doc="WDPD: rollout steps per world of the distillation data"),
    "distill_steps": Field(int, 400, lo=1, doc="WDPD: fitting steps"),
    "etcl_law": Field(str, ETCL_LAW, choices=etcl.LAWS, doc="ETCL's equivalence law"),
}


def default_config() -> ml_collections.ConfigDict:
  """RL settings of every run (PPO, the RL config defaults) and the comparison's defaults.

  Sized by measurement on the 2-core machine (docs/control_brax_transfer.md) so that the default comparison
  finishes within 45 minutes.
  """
  c = base_rl_config("ppo")
  c.train.eval_envs = 32
  c.train.eval_every_steps = 8192
  c.train.checkpoint_every_steps = 16384
  c.train.target_success = 0.95
  c.transfer = defaults(TRANSFER_SCHEMA)
  return c


def _name(peg_arg: str) -> str:
  return os.path.basename(peg_arg)[:-3] if peg_arg.endswith(".py") else peg_arg


def run_config(c, peg: str, env, seeds: int, budget: int, seed: int = 0) -> ml_collections.ConfigDict:
  """The control_brax.train config of one run: `c`'s RL settings on `peg` with the compliance of `env`."""
  cfg = ml_collections.ConfigDict(c.to_dict())
  del cfg.transfer
  cfg.env = ml_collections.ConfigDict(env.to_dict())
  cfg.env.peg = peg
  cfg.train.num_seeds = seeds
  cfg.train.total_env_steps = budget
  cfg.train.seed = seed
  return validate_rl(cfg)


def _done(workdir: str) -> dict | None:
  path = os.path.join(workdir, "done.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def _train(cfg, workdir: str, log, init_hook=None, progress: bool = True) -> dict:
  from control_brax.train import exit_if_signalled, train  # noqa: PLC0415 - heavy import only when training

  got = _done(workdir)
  if got is not None:
    log(f"{workdir}: finished earlier, skipped")
    return got
  summary = train(cfg, workdir, log=log, progress=progress, init_hook=init_hook)
  exit_if_signalled(summary)  # stopped (and saved) by a signal: not finished, and no next run
  with open(os.path.join(workdir, "done.json"), "w") as f:
    json.dump(summary, f)
  return summary


def _teacher_state(cfg, workdir: str):
  """The teacher's train state (seed axis first) from its newest checkpoint."""
  from control_brax.evaluate import load_agent  # noqa: PLC0415

  return load_agent(cfg, workdir)[1]


def _evaluate0(runner, ts, workdir: str) -> dict:
  """Evaluation of the starting policy (before any RL on B); written to eval0.json."""
  t0 = time.time()
  keys = jax.random.split(jax.random.PRNGKey(10_000), runner.cfg.train.num_seeds)
  ev = jax.device_get(runner.evaluate(ts.params, ts.obs_stats, keys))
  out = {"env_steps": 0, "wall_s": 0.0, "eval_success_rate_per_seed": [float(x) for x in ev["success_rate"]],
         "eval_peak_force_n_per_seed": [float(x) for x in ev["peak_force_n"]], "eval_s": time.time() - t0}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "eval0.json"), "w") as f:
    json.dump(out, f)
  return out


def make_hook(method: str, teacher, workdir: str, fa=None, fb=None, distill_cfg=None, log=print):
  """init_hook for control_brax.train: start from the teacher (or its WDPD student) and record eval0."""

  def hook(runner, ts):
    if method in ("finetune", "etcl"):
      # Adam's fresh state (zero moments, count 0) does not depend on the parameters' values: keep ts's.
      ts = ts.replace(params=teacher.params, obs_stats=teacher.obs_stats)
    elif method == "etcl_wdpd":
      ts = _wdpd_state(runner, ts, teacher, fa, fb, distill_cfg, workdir, log)
    _evaluate0(runner, ts, workdir)
    return ts

  return hook


def _wdpd_state(runner, ts, teacher, fa, fb, dc, workdir: str, log):
  """Distils each seed's teacher into a fresh student on B's observations (teacher acting on B, ETCL compliance)."""
  t0 = time.time()
  env, cfg = runner.env, runner.cfg
  n_envs, t_len = cfg.ppo.num_envs, dc.distill_rollout_len
  w = wdpd.weights(fa, fb, cfg.env.action_dims, dc.etcl_law)
  hidden = tuple(cfg.ppo.hidden)

  def collect(policy, stats, key):
    k_reset, k_steps = jax.random.split(key)

    def body(state, k):
      obs = normalize(stats, state.obs)
      state, _ = rollout.step(env, state, nets.policy_mean(policy, obs), k)
      return state, obs

    _, obs = jax.lax.scan(body, rollout.reset(env, k_reset, n_envs), jax.random.split(k_steps, t_len))
    return obs.reshape(-1, obs.shape[-1])

  def one(policy, stats, key):
    k_data, k_fit = jax.random.split(key)
    obs = collect(policy, stats, k_data)
    return wdpd.distill(k_fit, policy, obs, w, hidden, cfg.ppo.init_log_std, steps=dc.distill_steps)

  keys = jax.random.split(jax.random.PRNGKey(cfg.train.seed + 77), cfg.train.num_seeds)
  args = (teacher.params["policy"], teacher.obs_stats, keys)
  compiled = jax.jit(jax.vmap(one)).lower(*args).compile()  # compilation timed apart, as for the RL runs
  compile_s = time.time() - t0
  t0 = time.time()
  student, final_loss = jax.block_until_ready(compiled(*args))
  params = {"policy": student, "value": teacher.params["value"]}
  ts = ts.replace(params=params, obs_stats=teacher.obs_stats)
  info = {"weights": [float(x) for x in w], "action_dims": cfg.env.action_dims, "env_steps": n_envs * t_len,
          "wall_s": time.time() - t0, "compile_s": compile_s,
          "final_loss_per_seed": [float(x) for x in final_loss]}
  with open(os.path.join(workdir, "distill.json"), "w") as f:
    json.dump(info, f)
  log(f"WDPD: weights {np.round(w, 3).tolist()}, distilled in {info['wall_s']:.1f} s "
      f"(loss {np.mean(info['final_loss_per_seed']):.2e})")
  return ts


def compile_time(rows) -> float:
  """XLA compilation inside a run's measured wall time: the first iteration's time minus a typical iteration's.

  control_brax.train times each iteration including the first call's compilation (minutes on a loaded 2-core
  machine, and absent when a method reuses another's compiled program), so wall times here exclude it: the first
  iteration's time is replaced by the mean time of the later ones.
  """
  train = [r for r in rows if "step" in r and "wall_s" in r and "eval_success_rate" not in r]
  first = next((r for r in train if r["step"] == 1), None)
  last = max(train, key=lambda r: r["step"], default=None)
  if first is None or last is None or last["step"] <= 1:
    return 0.0
  typical = (last["wall_s"] - first["wall_s"]) / (last["step"] - 1)
  return max(first["wall_s"] - typical, 0.0)


def per_seed(workdir: str) -> dict:
  """Per-seed figures of one method's run (eval0 + metrics.jsonl; WDPD's distillation cost added)."""
  with open(os.path.join(workdir, "eval0.json")) as f:
    e0 = json.load(f)
  extra_steps, extra_wall = 0, 0.0
  if os.path.exists(os.path.join(workdir, "distill.json")):
    with open(os.path.join(workdir, "distill.json")) as f:
      d = json.load(f)
    extra_steps, extra_wall = d["env_steps"], d["wall_s"]
  rows = read_metrics(workdir)
  compile_s = compile_time(rows)
  evals = [e0] + [{**r, "wall_s": r["wall_s"] - compile_s} for r in rows if "eval_success_rate_per_seed" in r]
  n = len(e0["eval_success_rate_per_seed"])
  steps_to, wall_to = [None] * n, [None] * n
  for r in evals:
    for s, x in enumerate(r["eval_success_rate_per_seed"]):
      if steps_to[s] is None and x >= THRESHOLD:
        steps_to[s], wall_to[s] = r["env_steps"] + extra_steps, r["wall_s"] + extra_wall
  last = evals[-1]
  return {"steps_to_80": steps_to, "wall_s_to_80": wall_to, "final_success_rate": last["eval_success_rate_per_seed"],
          "peak_force_n": last["eval_peak_force_n_per_seed"], "start_success_rate": e0["eval_success_rate_per_seed"],
          "compile_s_excluded": compile_s,
          "curve": {"env_steps": [r["env_steps"] + extra_steps for r in evals],
                    "success": [r["eval_success_rate_per_seed"] for r in evals]}}


def summarize(seeds: dict) -> dict:
  return {"steps_to_80": median_ci(seeds["steps_to_80"]), "wall_s_to_80": median_ci(seeds["wall_s_to_80"]),
          "final_success_rate": median_ci(seeds["final_success_rate"]),
          "peak_force_n": median_ci(seeds["peak_force_n"]),
          "start_success_rate": median_ci(seeds["start_success_rate"])}


def run(source: str, target: str, out: str, c=None, log=None, progress: bool = True, train_runs: bool = True,
        methods=METHODS) -> dict:
  """The whole comparison (resumable); returns the results dict whose summaries the binary prints.

  With `train_runs=False` nothing is trained: the report covers whatever runs exist under `out` (a partial
  report while the comparison is still running elsewhere). `methods` limits which methods this call trains
  (e.g. to run them in separate processes); the report covers every method with results.
  """
  log = log or (lambda m: print(m, file=sys.stderr, flush=True))
  bad = [m for m in methods if m not in METHODS]
  if bad:
    raise ConfigError(f"--methods: {', '.join(map(repr, bad))} is not a method; allowed: a comma-separated list of "
                      f"{', '.join(METHODS)}")
  c = c or default_config()
  tc = validate(c.transfer, TRANSFER_SCHEMA, root="config.transfer")
  peg_a, peg_b = load_peg(source), load_peg(target)
  fa, fb = etcl.features(peg_a), etcl.features(peg_b)
  env_a = ml_collections.ConfigDict(c.env.to_dict())  # A's compliance: the RL config's gains
  law = tc.etcl_law
  env_etcl = etcl.reconfigure_env(env_a, peg_a, peg_b, law)
  # Every run's config is derived and validated here, before anything is written or trained (a bad value must
  # not surface after the teacher's training).
  teacher_cfg = run_config(c, source, env_a, tc.seeds, tc.teacher_steps, seed=1000)
  method_cfgs = {m: run_config(c, target, env_etcl if m.startswith("etcl") else env_a, tc.seeds, tc.budget_steps,
                               seed=0) for m in METHODS if m in methods}
  make_dir(out, "--out")
  t_start = time.time()

  teacher_dir = os.path.join(out, "teacher")
  if train_runs:
    log(f"teacher on {peg_a.name}: {tc.seeds} seed(s), up to {tc.teacher_steps} env steps")
    teacher_summary = _train(teacher_cfg, teacher_dir, log, progress=progress)
    teacher = _teacher_state(teacher_cfg, teacher_dir)
  else:
    teacher_summary = _done(teacher_dir) or {}

  for method, cfg in method_cfgs.items() if train_runs else ():
    workdir = os.path.join(out, "runs", method)
    log(f"{method} on {peg_b.name}")
    hook = make_hook(method, teacher, workdir, fa, fb, tc, log)
    _train(cfg, workdir, log, init_hook=hook, progress=progress)

  results, unfinished = {}, []
  for method in METHODS:
    workdir = os.path.join(out, "runs", method)
    if _done(workdir) is None:
      unfinished.append(method)
    if not os.path.exists(os.path.join(workdir, "eval0.json")):
      continue
    seeds = per_seed(workdir)
    results[method] = {"seeds": seeds, "summary": summarize(seeds)}
  meta = {"source": peg_a.name, "target": peg_b.name, "source_arg": source, "target_arg": target,
          "seeds": tc.seeds, "budget_steps": tc.budget_steps, "teacher": teacher_summary,
          "features": {"source": fa.__dict__, "target": fb.__dict__},
          "gains_source": etcl.Gains.from_env(env_a).__dict__, "gains_etcl": etcl.Gains.from_env(env_etcl).__dict__,
          "wdpd_weights": wdpd.weights(fa, fb, c.env.action_dims, law).tolist(), "etcl_law": law,
          "wall_s_this_call": time.time() - t_start,
          "unfinished": unfinished, "config": c.to_dict()}
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=1)
  try:
    plots(results, out)
  except ImportError:
    pass
  report(meta, results, out)
  return {"meta": meta, "results": results}


def contract_json(res: dict) -> dict:
  """docs/contracts.md's JSON: per method steps_to_80, wall_s_to_80 ({median, ci95}), final_success_rate,
  peak_force_n."""
  out = {}
  for m in METHODS:
    if m not in res["results"]:
      out[m] = None
      continue
    s = res["results"][m]["summary"]
    out[m] = {k: {"median": s[k]["median"], "ci95": s[k]["ci95"]} for k in ("steps_to_80", "wall_s_to_80")}
    out[m]["final_success_rate"] = s["final_success_rate"]["median"]
    out[m]["peak_force_n"] = s["peak_force_n"]["median"]
    out[m]["final_success_rate_ci95"] = s["final_success_rate"]["ci95"]
    out[m]["peak_force_n_ci95"] = s["peak_force_n"]["ci95"]
    out[m]["reached_80"] = s["steps_to_80"]["reached"]
  out["source"], out["target"], out["seeds"] = res["meta"]["source"], res["meta"]["target"], res["meta"]["seeds"]
  return out


def plots(results: dict, out: str) -> None:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  methods = [m for m in METHODS if m in results]
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
  for m in methods:
    cur = results[m]["seeds"]["curve"]
    y = np.asarray(cur["success"])
    a1.plot(cur["env_steps"], y.mean(1), label=m, marker=".")
    a1.fill_between(cur["env_steps"], y.min(1), y.max(1), alpha=0.15)
  a1.axhline(THRESHOLD, ls="--", color="gray", lw=0.8)
  a1.set_xlabel("env steps on the target per seed")
  a1.set_ylabel("eval success (mean, min-max over seeds)")
  a1.set_ylim(-0.02, 1.02)
  a1.legend(fontsize=8)
  for i, m in enumerate(methods):
    s = results[m]["summary"]["steps_to_80"]
    v = [np.nan if x is None else x for x in results[m]["seeds"]["steps_to_80"]]
    a2.scatter([i] * len(v), v, color="k", s=12, zorder=3)
    if s["median"] is not None:
      lo, hi = s["ci95"]
      a2.bar(i, s["median"], color="tab:blue", alpha=0.6)
      if lo is not None and hi is not None:
        a2.errorbar(i, s["median"], yerr=[[s["median"] - lo], [hi - s["median"]]], color="k", capsize=4)
  a2.set_xticks(range(len(methods)), methods)
  a2.set_ylabel("env steps to 80% (median, 95% CI; dots: seeds)")
  fig.tight_layout()
  fig.savefig(os.path.join(out, "transfer.png"), dpi=100)
  plt.close(fig)


def _fmt(s: dict, digits: int = 0) -> str:
  if s["median"] is None:
    return f"not reached ({s['reached']}/{s['n']} seeds reached)"
  lo, hi = (("inf" if x is None else f"{x:.{digits}f}") for x in s["ci95"])
  return f"{s['median']:.{digits}f} [{lo}, {hi}]"


def _better(a: dict, b: dict, lower: bool) -> str:
  """'yes' if a's interval lies strictly on the better side of b's, 'no' if on the worse side, else 'unclear'."""
  inf = float("inf")
  alo, ahi = (inf if x is None else x for x in a["ci95"])
  blo, bhi = (inf if x is None else x for x in b["ci95"])
  if lower:
    return "yes" if ahi < blo else ("no" if alo > bhi else "unclear (intervals overlap)")
  return "yes" if alo > bhi else ("no" if ahi < blo else "unclear (intervals overlap)")


def report(meta: dict, results: dict, out: str) -> str:
  s = {m: results[m]["summary"] for m in METHODS if m in results}
  lines = [f"# Transfer {meta['source']} -> {meta['target']} (PPO + compliance)", "",
           f"{meta['seeds']} seeds per method, {meta['budget_steps']:,} env steps on the target per seed; teacher "
           f"on {meta['source']}: {meta['teacher'].get('env_steps', 0):,} env steps, final eval success "
           f"{meta['teacher'].get('eval_success_rate') or float('nan'):.3f}. Median over seeds, 95% bootstrap interval "
           "(a seed that never reached 80% counts as infinitely slow). Env steps and wall time include WDPD's "
           "distillation rollout and fitting.", "",
           "| method | start success | env steps to 80% | wall s to 80% | final success | peak force (N) |",
           "|---|---|---|---|---|---|"]
  if meta.get("unfinished"):
    lines[2:2] = [f"**Partial report: still running or not started: {', '.join(meta['unfinished'])}** (figures of "
                  "an unfinished run are its latest evaluation).", ""]
  for m in s:
    lines.append(f"| {m} | {_fmt(s[m]['start_success_rate'], 2)} | {_fmt(s[m]['steps_to_80'])} | "
                 f"{_fmt(s[m]['wall_s_to_80'])} | {_fmt(s[m]['final_success_rate'], 3)} | "
                 f"{_fmt(s[m]['peak_force_n'], 1)} |")
  lines += ["", "ETCL gains: " + json.dumps({k: [round(x, 4) for x in v] for k, v in meta['gains_etcl'].items()}),
            "", "Source gains: " + json.dumps({k: [round(x, 4) for x in v] for k, v in meta['gains_source'].items()}),
            "", f"WDPD weights (x, y, z, rx, ry, rz): {np.round(meta['wdpd_weights'], 3).tolist()}", "",
            "## The papers' claims (ETCL + WDPD: less time and better control than learning anew)", ""]
  for name, a, b in (("ETCL + WDPD vs scratch", "etcl_wdpd", "scratch"), ("ETCL vs scratch", "etcl", "scratch"),
                     ("ETCL vs naive fine-tuning", "etcl", "finetune"),
                     ("ETCL + WDPD vs ETCL", "etcl_wdpd", "etcl"),
                     ("ETCL + WDPD vs naive fine-tuning", "etcl_wdpd", "finetune")):
    if a not in s or b not in s:
      continue
    lines.append(f"- {name}: fewer env steps to 80%: {_better(s[a]['steps_to_80'], s[b]['steps_to_80'], True)}; "
                 f"less wall time: {_better(s[a]['wall_s_to_80'], s[b]['wall_s_to_80'], True)}; "
                 f"higher final success: {_better(s[a]['final_success_rate'], s[b]['final_success_rate'], False)}; "
                 f"lower peak force: {_better(s[a]['peak_force_n'], s[b]['peak_force_n'], True)}")
  lines += ["", "![transfer](transfer.png)", ""]
  return atomic_write(os.path.join(out, "report.md"), "\n".join(lines))


def main(argv):
  del argv
  c = default_config()
  if _CONFIG.value is not None:
    user = _CONFIG.value
    for k in user.keys():
      c[k] = user[k]
  if _SEEDS.value is not None:
    c.transfer.seeds = _SEEDS.value
  if _BUDGET.value is not None:
    c.transfer.budget_steps = _BUDGET.value
  for holder, name in ((_SEEDS, "seeds"), (_BUDGET, "budget_steps")):  # a bad flag is named as the flag
    if holder.value is not None:
      TRANSFER_SCHEMA[name].check(f"--{name}", holder.value)
  out = _OUT.value or os.path.join("results", f"transfer_{_name(_SOURCE.value)}_{_name(_TARGET.value)}")
  res = run(_SOURCE.value, _TARGET.value, out, c, progress=_PROGRESS.value, train_runs=not _REPORT_ONLY.value,
            methods=_METHODS.value.split(","))
  js = contract_json(res)
  if _JSON.value:
    print(json.dumps(js))
  else:
    print(open(os.path.join(out, "report.md")).read())


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Optional RL config file (default: transfer defaults).")
  _SOURCE = flags.DEFINE_string("source", None, "Source geometry A: peg name or peg parameter file.")
  _TARGET = flags.DEFINE_string("target", None, "Target geometry B: peg name or peg parameter file.")
  _SEEDS = flags.DEFINE_integer("seeds", None, "Seeds per method (default: config.transfer.seeds).")
  _BUDGET = flags.DEFINE_integer("budget_steps", None, "Env steps on the target per seed (default: config).")
  _OUT = flags.DEFINE_string("out", None, "Output directory (default results/transfer_<A>_<B>); resumable.")
  _JSON = flags.DEFINE_bool("json", False, "Print the docs/contracts.md JSON as the last line.")
  _PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars on stderr.")
  _METHODS = flags.DEFINE_string("methods", ",".join(METHODS), "Methods this call trains (comma-separated).")
  _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Train nothing; report the runs that exist under --out.")
  flags.mark_flags_as_required(["source", "target"])
  confspec.run(main)
