"""The demo's report: `<out>/report.md` and its plots, built only from the files the demo's stages wrote.

Every number in the report goes through `Figures.add(label, value, source)`, which also lists it in the report's
"Figures and their sources" table (file and field), so a reader (and tests/experiments/test_demo.py) can check each one
against the run's own metrics files.
"""

from __future__ import annotations

import json
import os

import numpy as np

from runkit.metrics import read_jsonl


def _lines(path: str) -> list[dict]:
  return read_jsonl(path, missing_ok=True)


def _last(path: str) -> dict | None:
  rows = _lines(path)
  return rows[-1] if rows else None


def _mean(v):
  return float(np.mean(v)) if isinstance(v, list) else v


class Figures:
  def __init__(self):
    self.rows: list[tuple[str, object, str]] = []

  def add(self, label: str, value, source: str):
    self.rows.append((label, value, source))
    return fmt(value)


def fmt(v) -> str:
  if v is None:
    return "n/a"
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, int):
    return str(v)
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def _plot(path: str, draw) -> str | None:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig = plt.figure(figsize=(6.4, 3.6))
  try:
    draw(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
  finally:
    plt.close(fig)
  return os.path.basename(path)


def _sim_section(out: str, fig: Figures) -> list[str]:
  rows = [r for r in _lines(os.path.join(out, "sim", "search.jsonl")) if "plan" in r and "results" not in r]
  if not rows:
    return ["No simulator output (stage failed or skipped)."]
  best = rows[0]
  src = "sim/search.jsonl[0]"
  keys = [k for k in ("tp", "pp", "ep", "dp", "vpp", "mbs", "gbs", "remat", "hier_a2a") if k in best]
  plan = ", ".join(f"{k}={best[k]}" for k in keys) or json.dumps(best.get("plan", {}))
  lines = [f"Calibrated on this machine (`sim/this_machine.py`), {len(rows)} plans ranked; the best: {plan}.",
           "",
           f"- predicted tokens/s: "
           f"{fig.add('sim predicted tokens/s', best.get('tokens_per_s'), src + '.tokens_per_s')}",
           f"- predicted MFU: {fig.add('sim predicted mfu', best.get('mfu'), src + '.mfu')}",
           f"- predicted step time (s): {fig.add('sim step_time_s', best.get('step_time_s'), src + '.step_time_s')}",
           f"- memory per device (GB): "
           f"{fig.add('sim memory_per_device_gb', best.get('memory_per_device_gb'), src + '.memory_per_device_gb')}"]
  return lines


def _train_section(out: str, fig: Figures, plots: list[str]) -> list[str]:
  rows = _lines(os.path.join(out, "pangu", "metrics.jsonl"))
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if "val_loss" in r]
  if not train:
    return ["No training metrics (stage failed or skipped)."]
  last = train[-1]
  src = "pangu/metrics.jsonl"
  lines = [f"- steps: {fig.add('pangu steps', last['step'], src + ' last training line .step')}",
           f"- final training loss: {fig.add('pangu final loss', last['loss'], src + ' last training line .loss')}",
           f"- tokens/s: {fig.add('pangu tokens/s', last['tokens_per_s'], src + ' last training line .tokens_per_s')}",
           f"- MFU: {fig.add('pangu mfu', last['mfu'], src + ' last training line .mfu')}"]
  if evals:
    val = fig.add("pangu val loss", evals[-1]["val_loss"], src + " last .val_loss")
    lines.append(f"- final validation loss: {val}")
  bigram = next((r["bigram_val_loss"] for r in rows if "bigram_val_loss" in r), None)
  if bigram is not None:
    lines.append(f"- bigram baseline validation loss: {fig.add('bigram val loss', bigram, src + ' .bigram_val_loss')}")

  def loss_plot(f):
    ax = f.add_subplot(111)
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if evals:
      ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val loss")
    if bigram is not None:
      ax.axhline(bigram, ls="--", c="gray", label="bigram baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("nats / token")
    ax.legend()

  plots.append(_plot(os.path.join(out, "loss.png"), loss_plot))
  loads = [r["expert_load"] for r in train if "expert_load" in r]
  if loads:
    load = np.sum(np.asarray(loads, np.float64), axis=0)  # (layers, experts) over the logged steps
    share = load / load.sum(-1, keepdims=True)

    def load_plot(f):
      ax = f.add_subplot(111)
      im = ax.imshow(share, aspect="auto", cmap="viridis")
      ax.set_xlabel("expert")
      ax.set_ylabel("MoE layer")
      ax.set_title("share of assignments per expert (logged steps)")
      f.colorbar(im, ax=ax)

    plots.append(_plot(os.path.join(out, "expert_load.png"), load_plot))
    imb = load.max(-1) / load.mean(-1)
    lines.append("- expert load max/mean per MoE layer over the logged steps: "
                 + ", ".join(fig.add(f"expert load imbalance layer {i}", float(v), src + " sum of .expert_load")
                             for i, v in enumerate(imb)))
  return lines


def _generate_section(out: str, fig: Figures) -> list[str]:
  lines = []
  for name in ("plain", "speculative"):
    r = _last(os.path.join(out, f"generate_{name}.jsonl"))
    if r is None:
      lines.append(f"- {name}: no output (stage failed or skipped)")
      continue
    src = f"generate_{name}.jsonl"
    s = f"- {name}: {fig.add(f'generate {name} tokens/s', r['tokens_per_s'], src + '.tokens_per_s')} tokens/s"
    if r.get("acceptance_length") is not None:
      s += f", acceptance length {fig.add('acceptance length', r['acceptance_length'], src + '.acceptance_length')}"
    lines.append(s + f"; text: `{r['text'][:80]!r}`")
  return lines


def _parity_section(out: str, fig: Figures, plots: list[str]) -> list[str]:
  r = _last(os.path.join(out, "parity.jsonl"))
  if r is None:
    return ["No parity output (stage failed or skipped)."]
  src = "parity.jsonl"
  lines = [f"- passed: {fig.add('parity passed', r['passed'], src + '.passed')} (backend {r.get('backend')}, "
           f"{r.get('dtype')})",
           f"- max relative error: {fig.add('parity max_rel_err', r['max_rel_err'], src + '.max_rel_err')}",
           f"- max token KL: {fig.add('parity max_token_kl', r['max_token_kl'], src + '.max_token_kl')}",
           f"- router agreement: "
           f"{fig.add('parity router_agreement', r['router_agreement'], src + '.router_agreement')}"]
  layers = r.get("layers") or []
  if layers:

    def par_plot(f):
      ax = f.add_subplot(111)
      ax.bar([str(x["layer"]) for x in layers], [max(x["rel_l2"], 1e-12) for x in layers])
      ax.set_yscale("log")
      ax.set_xlabel("layer")
      ax.set_ylabel("relative L2 error (JAX vs torch)")

    plots.append(_plot(os.path.join(out, "parity_layers.png"), par_plot))
  return lines


def _rl_section(out: str, fig: Figures, plots: list[str]) -> list[str]:
  rows = _lines(os.path.join(out, "rl", "metrics.jsonl"))
  evals = [r for r in rows if "eval_success_rate" in r]
  lines = []
  if evals:
    src = "rl/metrics.jsonl"
    last = evals[-1]
    lines += [f"- env steps: {fig.add('rl env steps', last['env_steps'], src + ' last eval line .env_steps')}",
              f"- last training-time evaluation success: "
              f"{fig.add('rl eval success (training)', _mean(last['eval_success_rate']), src + ' .eval_success_rate')}"]

    def rl_plot(f):
      ax = f.add_subplot(111)
      ax.plot([r["env_steps"] for r in evals], [_mean(r["eval_success_rate"]) for r in evals], "o-")
      ax.set_xlabel("env steps")
      ax.set_ylabel("evaluation success rate")
      ax.set_ylim(-0.02, 1.02)

    plots.append(_plot(os.path.join(out, "rl_curve.png"), rl_plot))
  ev = _last(os.path.join(out, "rl_eval.jsonl"))
  if ev is not None:
    src = "rl_eval.jsonl"
    lines += [f"- evaluation ({fig.add('rl eval episodes', ev['episodes'], src + '.episodes')} episodes): success "
              f"{fig.add('rl success_rate', ev['success_rate'], src + '.success_rate')}, insertion time (s) "
              f"{fig.add('rl mean_insertion_time_s', ev['mean_insertion_time_s'], src + '.mean_insertion_time_s')}"
              f", peak force (N) {fig.add('rl peak_force_n', ev['peak_force_n'], src + '.peak_force_n')}"]
  strip = os.path.join(out, "rl", "episode_strip.png")
  if os.path.exists(strip):
    plots.append(os.path.relpath(strip, out))
  return lines or ["No RL output (stage failed or skipped)."]


def write_report(out: str) -> str:
  """Writes `<out>/report.md` (and plots) from the files under `out`; returns its path."""
  st = {}
  if os.path.exists(os.path.join(out, "stages.json")):
    with open(os.path.join(out, "stages.json")) as f:
      st = json.load(f)
  fig = Figures()
  plots: list[str] = []
  status = st.get("status", {})
  md = ["# Demo report", "",
        "Short versions of the full runs (`python -m experiments.demo`" + (" --quick" if st.get("quick") else "")
        + "): every figure below is read from this run's own files (table at the end).", "",
        "| stage | status |", "|---|---|"] + [f"| {k} | {v} |" for k, v in status.items()] + [""]
  sections = [("Simulator: a plan for the tiny model on this machine", _sim_section(out, fig)),
              ("Tiny Pangu MoE training", _train_section(out, fig, plots)),
              ("Generation", _generate_section(out, fig)),
              ("Export to PyTorch and parity", _parity_section(out, fig, plots)),
              ("Peg-in-hole: PPO + compliance, + PEAD in the full run (L-shaped peg)",
               _rl_section(out, fig, plots))]
  for title, lines in sections:
    md += [f"## {title}", ""] + lines + [""]
  md += ["## Plots", ""] + [f"![{os.path.splitext(os.path.basename(p))[0]}]({p})" for p in plots if p] + [""]
  md += ["## Figures and their sources", "", "| figure | value | source |", "|---|---|---|"]
  md += [f"| {label} | {fmt(v)} | `{src}` |" for label, v, src in fig.rows]
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(md) + "\n")
  with open(os.path.join(out, "report_figures.json"), "w") as f:
    json.dump([{"figure": a, "value": b, "source": c} for a, b, c in fig.rows], f, indent=1)
  return path
