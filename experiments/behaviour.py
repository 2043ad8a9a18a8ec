"""`python -m experiments.behaviour --out=DIR [--config.study.seeds=2 ...] [--json]`: the Pangu behaviour study.

Three questions the Pangu Ultra MoE paper answers at 718B scale, asked again of the tiny model on the embedded
corpus, with short runs (so the figures are indicative, not a replication):
  1. Do experts specialise by text domain (prose, code, tables)? Mutual information between a token's domain and
     the expert it is routed to, per MoE layer, against two baselines: the same model with the domain labels
     circularly shifted (label structure kept, alignment destroyed), and the same architecture at initialisation
     (byte identity alone already correlates with domain, so a random router is not at zero).
  2. Does the granularity of the balancing loss (micro-batch / EP group / global batch) change specialisation,
     load balance and validation loss?
  3. Does DSSN + TinyInit train more stably than pre-norm + standard init at an aggressive learning rate
     (gradient-norm spikes and loss spikes counted, validation loss)?

Every training run goes through `pangu_jax.train.loop.train` into `DIR/runs/<arm>_s<seed>`; a finished run
leaves `analysis.json` there and is skipped on a re-run, and an interrupted one resumes from its checkpoint, so
re-running the same command resumes the study. `DIR/results.json`, `DIR/report.md` and the plots are rebuilt
from the run directories at the end. Definitions: docs/studies.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

import confspec
from confspec import ConfigError, Field, defaults, validate
from pangu_jax.config import SCHEMA as PANGU_SCHEMA
from pangu_jax.config import _cross_checks, base_config
from pangu_jax.model import transformer
from pangu_jax.train.data import Corpus, split_documents
from runkit.atomic import atomic_write, atomic_write_json
from runkit.metrics import read_metrics

DOMAINS = ("prose", "code", "table")
GRANULARITIES = ("micro_batch", "ep_group", "global_batch")
STABILITY_ARMS = {"dssn_tinyinit": (True, True), "prenorm_stdinit": (False, False)}

STUDY_SCHEMA = {
    "seeds": Field(int, 2, lo=1, hi=8, doc="seeds per arm"),
    "balance_steps": Field(int, 300, lo=2, doc="steps of each balancing-loss run"),
    "stability_steps": Field(int, 200, lo=2, doc="steps of each stability run"),
    "stability_lr": Field(float, 3e-2, lo=0, lo_open=True, hi=1.0, doc="the aggressive peak learning rate"),
    "stability_warmup": Field(int, 10, lo=0, doc="warmup steps of the stability runs"),
    "probe_windows": Field(int, 160, lo=1, doc="validation windows routed for the domain statistics"),
    "shifts": Field(int, 32, lo=1, doc="circular label shifts of the baseline"),
    "spike_window": Field(int, 20, lo=2, doc="steps of the running median a spike is measured against"),
    "grad_spike_factor": Field(float, 3.0, lo=1, lo_open=True, doc="grad-norm spike: g > factor x running median"),
    "loss_spike_factor": Field(float, 1.1, lo=1, lo_open=True, doc="loss spike: ce > factor x running median"),
    "loss_spike_mad": Field(float, 6.0, lo=0, doc="loss spike also needs ce > median + this x 1.4826 MAD (0 = off)"),
    "tail_fraction": Field(float, 0.25, lo=0, lo_open=True, hi=1, doc="final share of steps averaged for train stats"),
}


def get_config() -> ml_collections.ConfigDict:
  """The study's defaults: the tiny preset (`pangu`) and the study sizes (`study`), sized for <= 40 min here."""
  pangu = base_config()
  pangu.train.update(batch_size=8, seq_len=128, ep_group_size=2, log_every=1, eval_every=100,
                     checkpoint_every=100, keep_checkpoints=1)
  # The split is by document: a quarter of the embedded corpus's 79 documents (every 4th) is held out, so that the
  # validation documents hold all three domains (at 0.05 the four held-out topics have no table).
  pangu.data.val_fraction = 0.25
  return ml_collections.ConfigDict(dict(pangu=pangu, study=defaults(STUDY_SCHEMA)))


def validate_study_config(cfg) -> ml_collections.ConfigDict:
  """Validates both sections up front; errors name the field (config.pangu.train.steps, config.study.seeds)."""
  validate(cfg.study, STUDY_SCHEMA, root="config.study")
  validate(cfg.pangu, PANGU_SCHEMA, root="config.pangu", checks=(_cross_checks,))
  if cfg.pangu.model.num_layers <= cfg.pangu.model.num_dense_layers:
    raise ConfigError("config.pangu.model.num_dense_layers: must be < num_layers; the study needs MoE layers")
  if cfg.pangu.train.batch_size % cfg.pangu.train.ep_group_size or \
     cfg.pangu.train.ep_group_size in (1, cfg.pangu.train.batch_size):
    raise ConfigError(f"config.pangu.train.ep_group_size: {cfg.pangu.train.ep_group_size}; allowed: a divisor of "
                      f"batch_size ({cfg.pangu.train.batch_size}) strictly between 1 and batch_size, so the three "
                      "granularities differ")
  return cfg


# ----------------------------------------------------------------------------- domains of the corpus

_GRID_ROW = re.compile(r"^\s*[+|].*[+|]\s*$")  # grid-table border or row: +---+---+ / | a | b |
_SIMPLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")  # simple-table border: ===  ====
_PLAIN_WORD = re.compile(r"^[(\"“‘]?[A-Za-z][A-Za-z’'-]*[)\"”’]?[.,;:!?]?\)?$")
_CODE_LINE = re.compile(  # a Python statement on its own line: keyword header, assignment, or a bare call
    r"^\s*((async\s+)?(def|class|for|while|if|elif|else|try|except|finally|with|match|case)\b.{0,60}:\s*$"
    r"|[A-Za-z_][\w.\[\]'\"]*\s*(=|\+=|-=|\*=|:=)\s*\S.*$"
    r"|(return|yield|raise|import|from|pass|await|del|assert|global|nonlocal)\b[^.]*$"
    r"|[A-Za-z_][\w.]*\(.*\)\s*$)")


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip(" "))


def classify_lines(lines: list[str]) -> list[str]:
  """The domain of each line: 'table', 'code' or 'prose' (our definition, docs/studies.md).

  table: a grid-table line (starts and ends with + or |) or a simple-table border (runs of '='), and the rows
         between two simple-table borders.
  code:  a paragraph (run of non-blank lines) holding a '>>>' prompt or a grammar rule ('::='), or an indented
         paragraph (>= 3 spaces) whose tokens are mostly not plain words (share of plain words < 0.6) or whose
         lines are at least half Python statements (a keyword header ending in ':', an assignment, a bare call):
         literal blocks, grammar productions and doctest output. Indented prose (list items, notes) stays prose.
  prose: everything else; blank lines take the domain of the line before them.
  """
  labels = ["prose"] * len(lines)
  in_simple = False
  for i, line in enumerate(lines):
    if _SIMPLE_BORDER.match(line):
      labels[i] = "table"
      in_simple = not in_simple if _indent(line) < 8 else in_simple
    elif _GRID_ROW.match(line) and len(line.strip()) > 2:
      labels[i] = "table"
    elif in_simple and line.strip():
      labels[i] = "table"
  i = 0
  while i < len(lines):
    if not lines[i].strip():
      i += 1
      continue
    j = i
    while j < len(lines) and lines[j].strip():
      j += 1
    para = [k for k in range(i, j) if labels[k] != "table"]
    if para:
      text = [lines[k] for k in para]
      prompt = any(t.lstrip().startswith((">>>", "...")) or "::=" in t for t in text)
      toks = [w for t in text for w in t.split()]
      plain = sum(bool(_PLAIN_WORD.match(w)) for w in toks) / max(len(toks), 1)
      indented = min(_indent(t) for t in text) >= 3
      stmts = sum(bool(_CODE_LINE.match(t)) for t in text) / len(text)
      if prompt or (indented and (plain < 0.6 or stmts >= 0.5)):
        for k in para:
          labels[k] = "code"
    i = j
  for i in range(1, len(lines)):
    if not lines[i].strip():
      labels[i] = labels[i - 1]
  return labels


def byte_domains(text: str) -> np.ndarray:
  """Domain index (into DOMAINS) of every UTF-8 byte of `text`; a line's newline belongs to that line."""
  lines = text.split("\n")
  labels = classify_lines(lines)
  parts = []
  for n, (line, lab) in enumerate(zip(lines, labels)):
    width = len(line.encode("utf-8")) + (n < len(lines) - 1)
    parts.append(np.full(width, DOMAINS.index(lab), np.int8))
  return np.concatenate(parts)


def val_domains(data_cfg, corpus: Corpus) -> np.ndarray:
  """Domain of every token of `corpus.val` (byte tokens), by the same document split as `Corpus` (checked to
  agree)."""
  parts = [byte_domains(text) for text, held_out in split_documents(data_cfg) if held_out]
  out = np.concatenate(parts) if parts else np.zeros(0, np.int8)
  if len(out) != len(corpus.val):
    raise RuntimeError("domain labels and the validation stream disagree in length (data split changed?)")
  return out


# ----------------------------------------------------------------------------- statistics (pure numpy)


def entropy_bits(p: np.ndarray) -> float:
  p = p[p > 0]
  return float(-(p * np.log2(p)).sum())


def mutual_information(joint_counts: np.ndarray) -> float:
  """I(D; E) in bits from a (domains, experts) count table."""
  total = joint_counts.sum()
  if total == 0:
    return 0.0
  pj = joint_counts / total
  pd, pe = pj.sum(1, keepdims=True), pj.sum(0, keepdims=True)
  nz = pj > 0
  return float((pj[nz] * np.log2(pj[nz] / (pd @ pe)[nz])).sum())


def domain_expert_counts(domains: np.ndarray, experts: np.ndarray, num_domains: int, num_experts: int) -> np.ndarray:
  """(domains, experts) counts; domains (T,), experts (T, k): each of the k assignments counts once."""
  k = experts.shape[-1]
  d = np.repeat(domains.reshape(-1), k)
  out = np.zeros((num_domains, num_experts), np.int64)
  np.add.at(out, (d, experts.reshape(-1)), 1)
  return out


def normalised_mi(domains: np.ndarray, experts: np.ndarray, num_domains: int, num_experts: int) -> float:
  """I(D; E) / H(D): the share of the domain's uncertainty the routed expert removes (0 = none, 1 = all)."""
  c = domain_expert_counts(domains, experts, num_domains, num_experts)
  h = entropy_bits(c.sum(1) / max(c.sum(), 1))
  return mutual_information(c) / h if h > 0 else 0.0


def shifted_baseline(domains: np.ndarray, experts: np.ndarray, num_domains: int, num_experts: int, shifts: int,
                     seed: int = 0) -> tuple[float, float]:
  """Mean and max normalised MI with the label sequence circularly shifted by random offsets (>= 1/4 of its length
  from the true alignment): keeps the domains' run lengths and shares, destroys their alignment with the tokens."""
  rng = np.random.default_rng(seed)
  n = len(domains)
  vals = [normalised_mi(np.roll(domains, int(rng.integers(n // 4, n - n // 4 + 1))), experts, num_domains,
                        num_experts) for _ in range(shifts)]
  return float(np.mean(vals)), float(np.max(vals))


def load_balance(load: np.ndarray) -> dict:
  """Coefficient of variation (std / mean) and max / mean of an expert-load vector (or rows of one)."""
  load = np.asarray(load, np.float64)
  mean = load.mean(-1)
  return {"cv": (load.std(-1) / np.maximum(mean, 1e-12)), "max_over_mean": load.max(-1) / np.maximum(mean, 1e-12)}


def count_spikes(values, window: int, factor: float, mad_k: float = 0.0) -> int:
  """Spike events: steps whose value exceeds `factor` x the median of the previous `window` steps (finite values
  only) and, when mad_k > 0, also the median + mad_k robust standard deviations (1.4826 x MAD) of those steps, so
  that ordinary batch-to-batch noise does not count. Consecutive spiking steps count as one event. Non-finite
  values count as a spike."""
  v = np.asarray(values, np.float64)
  events, prev = 0, False
  for t in range(window, len(v)):
    hist = v[t - window : t]
    hist = hist[np.isfinite(hist)]
    spike = not np.isfinite(v[t])
    if not spike and len(hist):
      med = np.median(hist)
      spike = v[t] > factor * med and (mad_k <= 0 or v[t] > med + mad_k * 1.4826 * np.median(np.abs(hist - med)))
    events += spike and not prev
    prev = spike
  return int(events)


# ----------------------------------------------------------------------------- runs


def _run_cfg(cfg, *, seed, steps, granularity="ep_group", sandwich=True, tiny=True, lr=None, warmup=None):
  c = ml_collections.ConfigDict(cfg.pangu.to_dict())
  c.train.update(seed=seed, steps=steps, aux_loss_granularity=granularity)
  c.model.update(sandwich_norm=sandwich, tiny_init=tiny)
  if lr is not None:
    c.train.learning_rate = lr
  if warmup is not None:
    c.train.warmup_steps = min(warmup, steps - 1)
  c.train.eval_every = min(c.train.eval_every, steps)
  c.train.checkpoint_every = min(c.train.checkpoint_every, steps)
  return c


def plan_runs(cfg) -> list[dict]:
  """Every run of the study: name, group, arm, seed and its Pangu config."""
  s, runs = cfg.study, []
  for seed in range(s.seeds):
    for g in GRANULARITIES:
      runs.append(dict(name=f"{g}_s{seed}", group="balance", arm=g, seed=seed,
                       cfg=_run_cfg(cfg, seed=seed, steps=s.balance_steps, granularity=g)))
  for seed in range(s.seeds):
    for arm, (sandwich, tiny) in STABILITY_ARMS.items():
      runs.append(dict(name=f"{arm}_s{seed}", group="stability", arm=arm, seed=seed,
                       cfg=_run_cfg(cfg, seed=seed, steps=s.stability_steps, sandwich=sandwich, tiny=tiny,
                                    lr=s.stability_lr, warmup=s.stability_warmup)))
  return runs


def make_router_probe(model_cfg):
  """probe(params, windows (N, S)) -> top-k experts (L_moe, N, S, k) of every token, 16 windows per call."""
  fwd = jax.jit(lambda p, t: transformer.forward(p, t, model_cfg).stats.topk_idx)

  def probe(params, windows):
    return np.concatenate([np.asarray(fwd(params, windows[i : i + 16])) for i in range(0, len(windows), 16)], axis=1)

  return probe


def probe_windows(stream: np.ndarray, domains: np.ndarray, n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
  """n windows of s tokens evenly spaced over the validation stream (all of it when n is large), with domains."""
  total = len(stream) // s
  pick = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
  idx = pick[:, None] * s + np.arange(s)[None, :]
  return stream[idx], domains[idx]


def routing_analysis(params, run_cfg, study_cfg, corpus: Corpus, domains_val: np.ndarray, probe=None) -> dict:
  """Domain specialisation and load balance of one model on probe windows spread over the validation split."""
  m = run_cfg.model
  probe = probe or make_router_probe(m)
  windows, dom = probe_windows(corpus.val, domains_val, study_cfg.probe_windows, run_cfg.train.seq_len)
  n, s = windows.shape
  idx = probe(params, windows)  # (L, n, s, k)
  e, nd = m.num_routed_experts, len(DOMAINS)
  layers = []
  for li in range(idx.shape[0]):
    flat_e = idx[li].reshape(-1, idx.shape[-1])
    flat_d = dom.reshape(-1)
    counts = domain_expert_counts(flat_d, flat_e, nd, e)
    nmi = normalised_mi(flat_d, flat_e, nd, e)
    base_mean, base_max = shifted_baseline(flat_d, flat_e, nd, e, study_cfg.shifts, seed=li)
    load = counts.sum(0)
    per_seq = np.stack([np.bincount(idx[li, j].reshape(-1), minlength=e) for j in range(n)])
    layers.append({
        "nmi": nmi, "mi_bits": mutual_information(counts), "shifted_nmi_mean": base_mean, "shifted_nmi_max": base_max,
        "counts": counts.tolist(), "load_cv": float(load_balance(load)["cv"]),
        "load_max_over_mean": float(load_balance(load)["max_over_mean"]),
        "per_sequence_cv": float(np.mean(load_balance(per_seq)["cv"])),
    })
  return {"layers": layers, "probe_tokens": int(n * s),
          "domain_share": (np.bincount(dom.reshape(-1), minlength=nd) / dom.size).tolist()}


def _tail_ratio(values) -> float | None:
  """99th percentile over median of the finite values: how heavy the upper tail is (1 = flat)."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(np.percentile(v, 99) / np.median(v)) if len(v) else None


def training_analysis(workdir: str, study_cfg) -> dict:
  """Spikes, skipped steps, tail load imbalance and final val loss from a run's metrics.jsonl."""
  recs = read_metrics(workdir)
  train = sorted((r for r in recs if "loss" in r), key=lambda r: r["step"])
  val = [r for r in recs if "val_loss" in r]
  nan = float("nan")
  ce = [r["ce"] if r["ce"] is not None else nan for r in train]
  gn = [r["grad_norm"] if r["grad_norm"] is not None else nan for r in train]
  tail = train[-max(1, int(len(train) * study_cfg.tail_fraction)):]
  imb = [np.mean(r["expert_load_imbalance"]) for r in tail if r.get("expert_load_imbalance")]
  return {
      "steps": train[-1]["step"] if train else 0,
      "final_val_loss": val[-1]["val_loss"] if val else None,
      "grad_spikes": count_spikes(gn, study_cfg.spike_window, study_cfg.grad_spike_factor),
      "loss_spikes": count_spikes(ce, study_cfg.spike_window, study_cfg.loss_spike_factor, study_cfg.loss_spike_mad),
      "skipped_steps": train[-1]["skipped_steps"] if train else 0,
      "max_grad_norm": float(np.nanmax(gn)) if gn else None,
      "grad_norm_p99_over_median": _tail_ratio(gn[study_cfg.spike_window :]),
      "tail_train_imbalance": float(np.mean(imb)) if imb else None,
      "wall_s": train[-1]["elapsed_s"] if train else None,
  }


def run_one(run: dict, out: str, study_cfg, progress: bool, log) -> dict:
  """Trains (or resumes) one run and analyses it; returns its analysis (cached in analysis.json)."""
  from pangu_jax.train.loop import train  # noqa: PLC0415
  from pangu_jax.train.state import init_train_state  # noqa: PLC0415
  from pangu_jax.workdir import load_params_for_inference  # noqa: PLC0415

  wd = os.path.join(out, "runs", run["name"])
  done = os.path.join(wd, "analysis.json")
  if os.path.exists(done):
    with open(done) as f:
      res = json.load(f)
    res["training"] = training_analysis(wd, study_cfg)  # cheap: spike definitions may change without retraining
    return res
  log(f"[study] run {run['name']} ({run['cfg'].train.steps} steps)")
  summary = train(run["cfg"], wd, progress=progress, log=log)
  if summary.get("signal"):  # stopped (and saved) by SIGTERM/SIGINT: exit as the signal would (re-running resumes)
    raise SystemExit(128 + summary["signal"])
  if summary["status"] != "completed":
    raise RuntimeError(f"run {run['name']} did not complete: {summary['status']}")
  res = {"name": run["name"], "group": run["group"], "arm": run["arm"], "seed": run["seed"],
         "training": training_analysis(wd, study_cfg)}
  if run["group"] == "balance":
    cfg, params = load_params_for_inference(wd)
    corpus = Corpus(cfg.data, cfg.train.seq_len)
    dv = val_domains(cfg.data, corpus)
    probe = make_router_probe(cfg.model)
    res["routing"] = routing_analysis(params, cfg, study_cfg, corpus, dv, probe)
    res["routing_init"] = routing_analysis(init_train_state(cfg)["params"], cfg, study_cfg, corpus, dv, probe)
  atomic_write_json(done, res)
  return res


# ----------------------------------------------------------------------------- aggregation, plots, report


def _ms(xs):
  xs = [x for x in xs if x is not None and math.isfinite(x)]
  if not xs:
    return {"mean": None, "min": None, "max": None, "n": 0}
  return {"mean": float(np.mean(xs)), "min": float(np.min(xs)), "max": float(np.max(xs)), "n": len(xs)}


def aggregate(results: list[dict]) -> dict:
  """Per-arm summaries (mean and range over seeds) of every headline figure."""
  agg = {"balance": {}, "stability": {}}
  for g in GRANULARITIES:
    rs = [r for r in results if r["group"] == "balance" and r["arm"] == g]
    if not rs:
      continue
    nl = len(rs[0]["routing"]["layers"])
    lay = lambda r, key: float(np.mean([x[key] for x in r["routing"]["layers"]]))
    agg["balance"][g] = {
        "seeds": len(rs),
        "nmi": _ms([lay(r, "nmi") for r in rs]),
        "nmi_per_layer": [_ms([r["routing"]["layers"][li]["nmi"] for r in rs]) for li in range(nl)],
        "shifted_nmi": _ms([lay(r, "shifted_nmi_mean") for r in rs]),
        "shifted_nmi_max": _ms([max(x["shifted_nmi_max"] for x in r["routing"]["layers"]) for r in rs]),
        "init_nmi": _ms([float(np.mean([x["nmi"] for x in r["routing_init"]["layers"]])) for r in rs]),
        "load_cv": _ms([lay(r, "load_cv") for r in rs]),
        "load_max_over_mean": _ms([lay(r, "load_max_over_mean") for r in rs]),
        "per_sequence_cv": _ms([lay(r, "per_sequence_cv") for r in rs]),
        "train_imbalance_tail": _ms([r["training"]["tail_train_imbalance"] for r in rs]),
        "final_val_loss": _ms([r["training"]["final_val_loss"] for r in rs]),
    }
  for arm in STABILITY_ARMS:
    rs = [r for r in results if r["group"] == "stability" and r["arm"] == arm]
    if not rs:
      continue
    agg["stability"][arm] = {
        "seeds": len(rs),
        "grad_spikes": _ms([r["training"]["grad_spikes"] for r in rs]),
        "loss_spikes": _ms([r["training"]["loss_spikes"] for r in rs]),
        "skipped_steps": _ms([r["training"]["skipped_steps"] for r in rs]),
        "max_grad_norm": _ms([r["training"]["max_grad_norm"] for r in rs]),
        "grad_norm_p99_over_median": _ms([r["training"]["grad_norm_p99_over_median"] for r in rs]),
        "final_val_loss": _ms([r["training"]["final_val_loss"] for r in rs]),
    }
  return agg


def make_plots(out: str, results: list[dict], study_cfg) -> list[str]:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  files = []
  ep = [r for r in results if r["group"] == "balance" and r["arm"] == "ep_group" and r["seed"] == 0]
  if ep:
    layers = ep[0]["routing"]["layers"]
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 2.8), squeeze=False)
    for li, (ax, lay) in enumerate(zip(axes[0], layers)):
      c = np.asarray(lay["counts"], np.float64)
      p_e_given_d = c / np.maximum(c.sum(1, keepdims=True), 1)
      lift = p_e_given_d / np.maximum(c.sum(0) / c.sum(), 1e-12)
      im = ax.imshow(lift, cmap="RdBu_r", vmin=0, vmax=2, aspect="auto")
      ax.set_yticks(range(len(DOMAINS)), DOMAINS)
      ax.set_xticks(range(c.shape[1]))
      ax.set_xlabel("expert")
      ax.set_title(f"MoE layer {li}: NMI {lay['nmi']:.3f}")
      for d in range(c.shape[0]):
        for e in range(c.shape[1]):
          ax.text(e, d, f"{lift[d, e]:.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), label="P(expert | domain) / P(expert)")
    fig.suptitle("Expert load by domain (EP-group loss, seed 0): 1 = no preference", y=1.06)
    path = os.path.join(out, "domain_expert_lift.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    files.append(path)
  bal = [g for g in GRANULARITIES if any(r["arm"] == g for r in results)]
  if bal:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    x = np.arange(len(bal))
    for r in (r for r in results if r["group"] == "balance"):
      i = bal.index(r["arm"])
      lay = r["routing"]["layers"]
      axes[0].scatter([i - 0.15], [np.mean([x_["nmi"] for x_ in lay])], color="C0", label="trained")
      axes[0].scatter([i], [np.mean([x_["shifted_nmi_mean"] for x_ in lay])], color="C1", label="shifted labels")
      axes[0].scatter([i + 0.15], [np.mean([x_["nmi"] for x_ in r["routing_init"]["layers"]])], color="C2",
                      label="at init")
      axes[1].scatter([i - 0.1], [np.mean([x_["load_cv"] for x_ in lay])], color="C0", label="global load CV")
      axes[1].scatter([i + 0.1], [np.mean([x_["per_sequence_cv"] for x_ in lay])], color="C3",
                      label="per-sequence load CV")
      axes[2].scatter([i], [r["training"]["final_val_loss"]], color="C0")
    for ax, t in zip(axes, ("domain NMI (mean over MoE layers)", "expert-load CV (probe set)",
                            "final val loss (nats/byte)")):
      ax.set_xticks(x, bal)
      ax.set_title(t, fontsize=10)
    for ax in axes[:2]:
      h, lab = ax.get_legend_handles_labels()
      uniq = dict(zip(lab, h))
      ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    path = os.path.join(out, "balance_granularity.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    files.append(path)
  stab = [r for r in results if r["group"] == "stability"]
  if stab:
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for r in stab:
      recs = [x for x in read_metrics(os.path.join(out, "runs", r["name"])) if "loss" in x]
      steps = [x["step"] for x in recs]
      color = "C0" if r["arm"] == "dssn_tinyinit" else "C3"
      ls = "-" if r["seed"] == 0 else ":"
      axes[0].plot(steps, [x["grad_norm"] for x in recs], color=color, ls=ls, lw=0.8, label=f"{r['arm']} s{r['seed']}")
      axes[1].plot(steps, [x["ce"] for x in recs], color=color, ls=ls, lw=0.8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("grad norm (pre-clip)")
    axes[1].set_ylabel("train CE (nats/byte)")
    axes[1].set_xlabel("step")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"aggressive learning rate {study_cfg.stability_lr:g}")
    path = os.path.join(out, "stability.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    files.append(path)
  return files


def _f(x, nd=3):
  return "n/a" if x is None else f"{x:.{nd}f}"


def _mr(s, nd=3):
  if s["n"] == 0:
    return "n/a"
  if s["n"] == 1:
    return _f(s["mean"], nd)
  return f"{_f(s['mean'], nd)} ({_f(s['min'], nd)}–{_f(s['max'], nd)})"


def write_report(out: str, cfg, agg: dict, results: list[dict], plots: list[str]) -> str:
  s, p = cfg.study, cfg.pangu
  lines = [
      "# Pangu behaviour study (tiny model, short runs)", "",
      "Generated by `python -m experiments.behaviour --out=results/behaviour`; every number below is read from "
      "`results.json`, which is built from the run directories. Definitions: `docs/studies.md`.", "",
      f"Model: the tiny preset ({p.model.num_layers} layers, {p.model.num_layers - p.model.num_dense_layers} MoE, "
      f"{p.model.num_routed_experts} routed experts top-{p.model.top_k} + {p.model.num_shared_experts} shared, "
      f"d={p.model.hidden_size}), byte tokens, batch {p.train.batch_size} x {p.train.seq_len}. "
      f"Seeds per arm: {s.seeds}. Balancing runs: {s.balance_steps} steps at lr {p.train.learning_rate:g}; "
      f"stability runs: {s.stability_steps} steps at lr {s.stability_lr:g} (warmup {s.stability_warmup}). "
      "These are short runs on a 2-core CPU: a tiny model a few hundred steps in, not a 718B model after trillions "
      "of tokens. Cells give the mean over seeds and (min–max).", "",
  ]
  b = agg["balance"]
  if b:
    r0 = next(r for r in results if r["group"] == "balance")
    share = r0["routing"]["domain_share"]
    lines += [
        "## 1. Do experts specialise by domain?", "",
        "**Paper's claim** (Pangu Ultra MoE, on the balancing loss): experts specialise, and how much depends on "
        "the granularity at which load is balanced: balancing inside every micro-batch hurts specialisation, "
        "balancing over the global batch specialises best, and the EP-group loss comes close to the global one "
        "(our reference sheet records the claim, not the paper's per-domain figures).", "",
        f"Probe: {r0['routing']['probe_tokens']} validation tokens in windows spread evenly over the split "
        f"(domain shares prose "
        f"{share[0]:.2f}, code {share[1]:.2f}, table {share[2]:.2f}). NMI = I(domain; expert) / H(domain), "
        "per MoE layer, averaged over layers.", "",
        "| balancing loss | NMI trained | NMI, labels shifted | NMI at init | NMI per layer (trained) |",
        "|---|---|---|---|---|",
    ]
    for g, a in b.items():
      per = ", ".join(_f(x["mean"]) for x in a["nmi_per_layer"])
      lines.append(f"| {g} | {_mr(a['nmi'])} | {_mr(a['shifted_nmi'])} | {_mr(a['init_nmi'])} | {per} |")
    ep = b.get("ep_group") or next(iter(b.values()))
    lines += ["", "**Ours:** " + _specialisation_verdict(results, ep)]
    lines += ["", "![domain lift](domain_expert_lift.png)", ""]
    lines += [
        "## 2. Balancing-loss granularity", "",
        "**Paper's claim**: micro-batch balancing forces every micro-batch to spread over all experts, which "
        "hurts specialisation; global-batch balancing specialises best but needs a global all-reduce; the "
        "EP-group loss is close to the global behaviour at the cost of a small all-reduce, and was the best of "
        "the three in the paper (coefficient 1e-2).", "",
        "| balancing loss | global load CV | max/mean load | per-sequence load CV | train max/mean (last "
        f"{s.tail_fraction:.0%} steps) | domain NMI | final val loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for g, a in b.items():
      lines.append(f"| {g} | {_mr(a['load_cv'])} | {_mr(a['load_max_over_mean'])} | {_mr(a['per_sequence_cv'])} "
                   f"| {_mr(a['train_imbalance_tail'])} | {_mr(a['nmi'])} | {_mr(a['final_val_loss'], 4)} |")
    lines += ["", "**Ours:** " + _balance_verdict(b), "", "![granularity](balance_granularity.png)", ""]
  st = agg["stability"]
  bal_runs = [r for r in results if r["group"] == "balance"]
  calib = (sum(r["training"]["grad_spikes"] for r in bal_runs), sum(r["training"]["loss_spikes"] for r in bal_runs),
           len(bal_runs))
  if st:
    lines += [
        "## 3. DSSN + TinyInit vs pre-norm + standard init at an aggressive learning rate", "",
        "**Paper's claim** (Pangu Ultra §2): depth-scaled sandwich norm with TinyInit gives about 51% fewer "
        "gradient-norm spikes than the pre-norm baseline and no loss spikes over 18T+ tokens.", "",
        f"Spike: a step whose pre-clip gradient norm exceeds {s.grad_spike_factor:g}x the median of the previous "
        f"{s.spike_window} steps; a loss spike: train CE above {s.loss_spike_factor:g}x that median and above the "
        f"median + {s.loss_spike_mad:g} robust standard deviations (1.4826 MAD) of those steps (a run of such steps "
        "is one event; a non-finite value is a spike). Calibration: the same definitions find "
        f"{calib[0]} gradient-norm and {calib[1]} loss spikes in total in the {calib[2]} runs of section 2 at the "
        f"preset's learning rate {p.train.learning_rate:g}, i.e. what ordinary batch-to-batch noise produces.", "",
        "| arm | grad-norm spikes | loss spikes | skipped (non-finite) steps | max grad norm | grad norm p99 / "
        f"median (after step {s.spike_window}) | final val loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, a in st.items():
      lines.append(f"| {arm} | {_mr(a['grad_spikes'], 1)} | {_mr(a['loss_spikes'], 1)} | "
                   f"{_mr(a['skipped_steps'], 1)} | {_mr(a['max_grad_norm'], 2)} | "
                   f"{_mr(a['grad_norm_p99_over_median'], 2)} | {_mr(a['final_val_loss'], 4)} |")
    lines += ["", "**Ours:** " + _stability_verdict(st, s.spike_window), "", "![stability](stability.png)", ""]
  lines += ["## Runs", "", "| run | steps | final val loss | wall s |", "|---|---|---|---|"]
  for r in results:
    t = r["training"]
    lines.append(f"| {r['name']} | {t['steps']} | {_f(t['final_val_loss'], 4)} | {_f(t['wall_s'], 0)} |")
  return atomic_write(os.path.join(out, "report.md"), "\n".join(lines) + "\n")


def _specialisation_verdict(results: list[dict], ep: dict) -> str:
  """Trained vs shifted-label and vs initialisation NMI, paired per run over every balancing run."""
  runs = [r for r in results if r["group"] == "balance"]
  trained = np.array([np.mean([x["nmi"] for x in r["routing"]["layers"]]) for r in runs])
  init = np.array([np.mean([x["nmi"] for x in r["routing_init"]["layers"]]) for r in runs])
  shifted_max = max(max(x["shifted_nmi_max"] for x in r["routing"]["layers"]) for r in runs)
  above_shift = int(np.sum(trained > shifted_max))
  above_init = int(np.sum(trained > init))
  diff = float(np.mean(trained - init))
  out = [f"with the EP-group loss the routed expert carries {ep['nmi']['mean']:.3f} of the domain's entropy "
         f"(NMI; shifted-label baseline {ep['shifted_nmi']['mean']:.4f}, at initialisation "
         f"{ep['init_nmi']['mean']:.3f})."
         f" Over all {len(runs)} balancing runs, the trained NMI exceeds the largest shifted-label value "
         f"({shifted_max:.4f}) in {above_shift} and its own value at initialisation in {above_init}, by "
         f"{diff:+.3f} on average."]
  if above_shift == len(runs) and above_init == len(runs) and diff > 0:
    out.append("So routing depends on the domain beyond chance, and training strengthens it: the direction of the "
               "paper's claim that experts specialise. The size is small (NMI "
               f"{trained.mean():.3f} after training against {init.mean():.3f} at initialisation, on average), and "
               "much of it is already there at initialisation, where byte identity alone (a table "
               "is mostly '|', '-', '+') ties a random router to the domain.")
  elif above_shift == len(runs):
    out.append("Routing depends on the domain beyond chance, but training does not consistently add to what byte "
               "identity gives a random router at initialisation: at this size and length we cannot confirm "
               "that the experts specialise through training.")
  else:
    out.append("Routing is not reliably distinguishable from the shifted-label baseline: no evidence of "
               "specialisation at this size and length.")
  return " ".join(out)


def _separated(b: dict, key: str) -> list[str]:
  """Pairs of arms whose seed ranges (min-max) of `key` do not overlap."""
  out = []
  for i, g in enumerate(GRANULARITIES):
    for h in GRANULARITIES[i + 1 :]:
      x, y = b[g][key], b[h][key]
      if x["n"] > 1 and y["n"] > 1 and (x["max"] < y["min"] or y["max"] < x["min"]):
        out.append(f"{g} vs {h}")
  return out


def _balance_verdict(b: dict) -> str:
  if not all(g in b for g in GRANULARITIES):
    return "not every granularity has finished; no comparison."
  nmi = {g: b[g]["nmi"]["mean"] for g in GRANULARITIES}
  cv = {g: b[g]["load_cv"]["mean"] for g in GRANULARITIES}
  seq = {g: b[g]["per_sequence_cv"]["mean"] for g in GRANULARITIES}
  val = {g: b[g]["final_val_loss"]["mean"] for g in GRANULARITIES}
  order = lambda d: " > ".join(sorted(d, key=d.get, reverse=True))
  out = [f"means order as follows (highest first): domain NMI {order(nmi)}; global load CV {order(cv)}; "
         f"per-sequence load CV {order(seq)}; final val loss {order(val)} (spread "
         f"{max(val.values()) - min(val.values()):.4f} nats/byte)."]
  for key, name in (("nmi", "NMI"), ("load_cv", "global load CV"), ("per_sequence_cv", "per-sequence load CV"),
                    ("final_val_loss", "final val loss")):
    sep = _separated(b, key)
    rest = "" if len(sep) == 3 else "; the other pairs overlap"
    out.append(f"Seed ranges of the {name} separate {', '.join(sep)}{rest}." if sep else
               f"The seed ranges of the {name} overlap for every pair.")
  if nmi["micro_batch"] < nmi["ep_group"] < nmi["global_batch"]:
    out.append("Specialisation rises with the size of the balancing group (micro-batch < EP group < global batch), "
               "the paper's ordering; the EP-group loss sits between the other two rather than close to the global "
               "one.")
  else:
    out.append("Specialisation does not rise with the size of the balancing group here, unlike the paper's ordering.")
  if cv["global_batch"] < cv["micro_batch"]:
    out.append("Balancing over larger groups also gave the more even load over the whole probe (lower global CV)" +
               (", while micro-batch balancing gave the lowest per-sequence CV (the load inside each sequence, "
                "what it constrains)." if min(seq, key=seq.get) == "micro_batch" else "."))
  out.append(f"With {min(b[g]['nmi']['n'] for g in GRANULARITIES)} seeds per arm, separated ranges are weak "
             "evidence.")
  return " ".join(out)


def _stability_verdict(st: dict, s_win: int) -> str:
  if not all(a in st for a in STABILITY_ARMS):
    return "not every arm has finished; no comparison."
  d, p = st["dssn_tinyinit"], st["prenorm_stdinit"]
  gd, gp = d["grad_spikes"]["mean"], p["grad_spikes"]["mean"]
  ld, lp = d["loss_spikes"]["mean"], p["loss_spikes"]["mean"]
  qd, qp = d["grad_norm_p99_over_median"]["mean"], p["grad_norm_p99_over_median"]["mean"]
  vd, vp = d["final_val_loss"]["mean"], p["final_val_loss"]["mean"]
  out = [f"per run, DSSN + TinyInit had {gd:.1f} gradient-norm spikes and {ld:.1f} loss spikes against {gp:.1f} and "
         f"{lp:.1f} for pre-norm + standard init; after the first {s_win} steps the gradient norm's 99th percentile "
         f"was {qd:.1f}x its median against {qp:.1f}x; final val loss {vd:.4f} vs {vp:.4f} nats/byte."]
  total = gd * d["grad_spikes"]["n"] + gp * p["grad_spikes"]["n"]
  if total < 5:
    out.append(f"{total:.0f} gradient-norm spike event(s) in all: too few to state a percentage reduction (the "
               "paper: 51% fewer gradient spikes), so the spike counts neither confirm nor contradict it.")
  elif gd < gp:
    out.append(f"That is {1 - gd / gp:.0%} fewer gradient-norm spikes (the paper: 51% fewer).")
  else:
    out.append("That is not fewer gradient-norm spikes: this does not agree with the paper's claim here.")
  if qd < qp and vd < vp:
    out.append("The gradient norm is less heavy-tailed and the loss lower with DSSN + TinyInit at this learning rate: "
               "the direction of the paper's claim.")
  elif qd >= qp and vd >= vp:
    out.append("Neither the tail of the gradient norm nor the loss favours DSSN + TinyInit here: this does not "
               "agree with the paper's claim at this scale and length.")
  else:
    out.append("The tail of the gradient norm and the loss point in different directions: inconclusive.")
  return " ".join(out)


def finish(out: str, cfg, results: list[dict]) -> dict:
  agg = aggregate(results)
  plots = make_plots(out, results, cfg.study)
  summary = {"config": {"study": cfg.study.to_dict(), "pangu": json.loads(cfg.pangu.to_json())},
             "aggregate": agg, "runs": results}
  atomic_write_json(os.path.join(out, "results.json"), summary, indent=1)
  report = write_report(out, cfg, agg, results, plots)
  return {"report": report, "aggregate": agg}


def run_study(cfg, out: str, *, progress: bool = True, log=None) -> dict:
  """Runs (or resumes) every run of the study, then writes results.json, the plots and report.md into `out`."""
  log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
  cfg = validate_study_config(cfg)
  os.makedirs(out, exist_ok=True)
  t0 = time.perf_counter()
  results = []
  runs = plan_runs(cfg)
  for i, run in enumerate(runs):
    results.append(run_one(run, out, cfg.study, progress, log))
    log(f"[study] {i + 1}/{len(runs)} runs done, {time.perf_counter() - t0:.0f}s this session")
  return finish(out, cfg, results)


def main(argv):
  del argv
  res = run_study(_CONFIG.value, _OUT.value, progress=_PROGRESS.value)
  print(f"report: {res['report']}")
  if _JSON.value:
    print(json.dumps({"report": res["report"], **res["aggregate"]}))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  with confspec.flag_errors():  # a default config applies the --config.a.b=v overrides as it is defined
    _CONFIG = config_flags.DEFINE_config_dict("config", get_config(), "Study config (sections pangu, study).")
  _OUT = flags.DEFINE_string("out", None, "Output directory (runs, results.json, report.md, plots); re-run to resume.")
  _PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars on stderr.")
  _JSON = flags.DEFINE_bool("json", False, "Print one JSON object (the headline aggregate) as the last line.")
  flags.mark_flags_as_required(["out"])
  confspec.run(main)
