"""The training loop: resume, train, evaluate, checkpoint, guard against NaN, report.

Re-running the same command resumes from the newest intact checkpoint; because a
batch is a pure function of (seed, step) and the state holds everything else, the
losses after a resume equal those of an uninterrupted run exactly. SIGTERM and
SIGINT save a checkpoint before exiting. A non-finite loss or gradient skips the
update; after `max_consecutive_skips` in a row the run stops without saving, so
the last good checkpoint stays the newest. A finite loss and gradient do not make a
finite update (b2 = 1 divides by zero in Adam's bias correction): before every save
the parameters and optimiser state are checked (one jitted all-finite reduction),
and a non-finite state is never saved; the run stops instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from pangu_jax.config import validate_config
from pangu_jax.flops import train_flops_per_token
from pangu_jax.parallel import placement, runtime
from pangu_jax.train.data import Corpus, bigram_val_loss
from pangu_jax.train.peak import peak_flops
from pangu_jax.train.state import (
  abstract_train_state,
  init_sharded_train_state,
  make_eval_step,
  make_train_step,
)
from runkit.atomic import atomic_write
from runkit.checkpoint import Checkpointer, all_finite
from runkit.lock import WorkdirLock
from runkit.metrics import MetricsWriter


class _NullWriter:
  """Metrics sink of the non-primary processes of a multi-host run (process 0 writes)."""

  def write(self, record: dict) -> None:
    del record

  def close(self) -> None:
    pass


class _StopFlag:
  def __init__(self):
    self.signal = None

  def __call__(self, signum, frame):
    self.signal = signum


def _kept(ckpt) -> str:
  """What the run leaves behind, for its stop line: "kept" only when a checkpoint exists."""
  ckpt.wait()
  steps = ckpt.steps()
  return f"last good checkpoint: step {steps[-1]}" if steps else "no checkpoint was saved"


def _write_config(cfg, workdir):
  atomic_write(os.path.join(workdir, "config.json"), cfg.to_json(indent=2))


def evaluate(eval_step, params, batches, put=lambda b: b) -> float:
  return float(np.mean([float(eval_step(params, put(b))) for b in batches]))


def train(cfg, workdir: str, *, inject_nan_at=(), progress: bool = True, log=None) -> dict:
  """Trains (or resumes) and returns a summary dict. `inject_nan_at`: steps whose loss is poisoned (tests).

  The config is validated before anything is touched; then the run holds `workdir`'s lock (runkit.lock: a
  second trainer on it stops with one line; process 0 holds it for a multi-host run)."""
  cfg = validate_config(cfg)
  with WorkdirLock(workdir, "pangu_jax.train") if jax.process_index() == 0 else contextlib.nullcontext():
    return _train(cfg, workdir, inject_nan_at=inject_nan_at, progress=progress, log=log)


def _train(cfg, workdir: str, *, inject_nan_at, progress: bool, log) -> dict:
  log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
  t = cfg.train
  os.makedirs(workdir, exist_ok=True)
  primary = jax.process_index() == 0
  corpus = Corpus(cfg.data, t.seq_len, workdir=workdir, progress=progress and primary, log=log,
                  vocab_size=cfg.model.vocab_size)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints, log=log)
  par = runtime.setup(cfg)  # on one device: a mesh whose axes all have size 1
  put = lambda b: runtime.put_batch(par, b)
  log(f"mesh {dict(zip(par.mesh.axis_names, par.mesh.devices.shape))} over {par.mesh.devices.size} devices")
  restored = ckpt.restore_latest(abstract_train_state(cfg, par))
  if restored is None:
    state, start = init_sharded_train_state(cfg, par), 0
  else:
    start, state, _ = restored
    log(f"resuming from step {start}")
  if primary:  # the run really starts or resumes: only now is its config written (a rejected one leaves it alone)
    _write_config(cfg, workdir)
  metrics = MetricsWriter(workdir, resume_step=start) if primary else _NullWriter()
  train_step, eval_step = make_train_step(cfg, par), make_eval_step(cfg, par)
  n_ep = par.layout.expert_shards
  permute = placement.make_permute(par.state_shardings)
  val = corpus.val_batches(t.batch_size, t.eval_batches)
  peak, peak_src = peak_flops()
  flops_tok = train_flops_per_token(cfg.model, t.seq_len)
  tokens_per_step = t.batch_size * t.seq_len
  if start == 0:
    bigram = bigram_val_loss(corpus.train, val, vocab=corpus.tokenizer.vocab_size)
    metrics.write({"step": 0, "bigram_val_loss": bigram, "peak_flops": peak, "peak_source": peak_src,
                   "model_flops_per_token": flops_tok, "train_tokens": len(corpus.train),
                   "val_tokens": len(corpus.val)})
  stop = _StopFlag()
  status, step, t_begin = "completed", start, time.perf_counter()
  t0 = time.perf_counter()
  train_step = train_step.lower(state, put(corpus.batch(t.seed, start, t.batch_size)), np.float32(0)).compile()
  log(f"compiled the train step in {time.perf_counter() - t0:.1f}s")
  t_mark, step_mark = time.perf_counter(), start
  last_val = None
  bar = tqdm(total=t.steps, initial=start, desc="train", unit="step", disable=not progress, mininterval=2,
             dynamic_ncols=True, file=sys.stderr)
  old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    for step in range(start, t.steps):
      poison = np.float32(np.nan) if step in inject_nan_at else np.float32(0.0)
      state, m = train_step(state, put(corpus.batch(t.seed, step, t.batch_size)), poison)
      done = step + 1
      if "load_ema" in state and done % cfg.parallel.placement_every == 0:
        order, rep = placement.plan(np.asarray(state["load_ema"]), n_ep, cfg.parallel.placement_min_gain)
        if order is not None:
          state = permute(state, order)
        metrics.write({"step": done, "placement": rep})
      if int(state["skips"]) >= t.max_consecutive_skips:
        status = f"stopped: {int(state['skips'])} consecutive non-finite steps ({_kept(ckpt)})"
        log(status)
        break
      if done % t.log_every == 0 or done == t.steps:
        m = jax.device_get(m)
        now = time.perf_counter()
        tps = (done - step_mark) * tokens_per_step / max(now - t_mark, 1e-9)
        t_mark, step_mark = now, done
        rec = {"step": done, "loss": float(m["loss"]), "ce": float(m["ce"]), "mtp_loss": float(m["mtp_loss"]),
               "aux_loss": float(m["aux_loss"]), "z_loss": float(m["z_loss"]), "grad_norm": float(m["grad_norm"]),
               "lr": float(m["lr"]), "tokens_per_s": tps, "mfu": tps * flops_tok / peak,
               "skipped_steps": int(state["total_skips"]), "elapsed_s": now - t_begin}
        if "expert_load_imbalance" in m:
          rec["expert_load_imbalance"] = m["expert_load_imbalance"]
          rec["expert_load"] = m["expert_load"]  # (MoE layers, experts) assignments this step
          rec["dropped_fraction"] = float(m["dropped_fraction"])
        metrics.write(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{tps:.0f}", refresh=False)
      bar.update(1)
      if done % t.eval_every == 0 or done == t.steps:
        last_val = evaluate(eval_step, state["params"], val, put)
        metrics.write({"step": done, "val_loss": last_val})
        bar.write(f"step {done}: val_loss {last_val:.4f}", file=sys.stderr)
      out_of_time = t.time_budget_s and time.perf_counter() - t_begin > t.time_budget_s
      in_skip_streak = int(state["skips"]) > 0  # never checkpoint in the middle of a run of non-finite steps
      saved = False
      if (done % t.checkpoint_every == 0 or done == t.steps or stop.signal or out_of_time) and not in_skip_streak:
        if not all_finite({"params": state["params"], "opt_state": state["opt_state"]}):
          status = (f"stopped: the parameters or optimiser state are not finite after step {done} (not saved; "
                    f"{_kept(ckpt)})")
          log(status)
          break
        saved = ckpt.save(done, state, {"config": json.loads(cfg.to_json())})
      if (stop.signal or out_of_time) and done != t.steps:
        status = f"stopped by signal {stop.signal}" if stop.signal else f"time budget {t.time_budget_s}s reached"
        log(f"{status}: " + (f"checkpoint saved at step {done}" if saved else "no checkpoint (in a non-finite streak)"))
        if out_of_time and done % t.eval_every:
          last_val = evaluate(eval_step, state["params"], val, put)
          metrics.write({"step": done, "val_loss": last_val})
        break
  finally:
    bar.close()
    ckpt.close()
    metrics.close()
    for s, h in old_handlers.items():
      signal.signal(s, h)
  return {"status": status, "step": int(state["step"]), "val_loss": last_val,
          "skipped_steps": int(state["total_skips"]), "wall_s": time.perf_counter() - t_begin,
          "signal": int(stop.signal) if stop.signal and status.startswith("stopped by signal") else None}
