"""`python -m control_brax.train --config=F --workdir=D`: train PPO or DDPG/TD3 on an assembly env (resumable).

Writes D/config.json, D/metrics.jsonl (training lines: step, env_steps, reward,
losses; evaluation lines: step, env_steps, eval_success_rate, eval_return,
eval_peak_force_n, eval_insertion_time_s, wall_s, per-seed lists),
TensorBoard events under D/tb, checkpoints under D/checkpoints, and
D/learning_curve.png; prints a JSON summary as the last line. Re-running the
same command resumes from the newest intact checkpoint exactly (the whole train
state, env worlds and RNG included, is checkpointed).

`train.num_seeds` independent seeds run vmapped inside one compiled program;
`step` counts training iterations and `env_steps` environment steps per seed.
With `pead.enabled` the run moves through `pead.stages` (control_brax.pead).

SIGTERM or SIGINT: the iteration in progress finishes, a checkpoint of that point is
saved, and the binary exits with 128 + the signal (143 for SIGTERM, 130 for SIGINT),
so a scheduler sees the stop; re-running the same command resumes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

import confspec
from control_brax.config import load_peg
from control_brax.envs import PegInHoleEnv
from control_brax.pead import extend_ddpg, extend_ppo, extend_sac, group_index
from control_brax.plots import learning_curve
from control_brax.rl import ddpg, ppo, replay, rollout, sac
from control_brax.rl.config import pead_stages, validate_rl
from runkit.atomic import atomic_write_json
from runkit.checkpoint import Checkpointer, all_finite
from runkit.lock import WorkdirLock
from runkit.metrics import MetricsWriter


def stage_env(cfg, stage: int):
  env_cfg = ml_collections.ConfigDict(cfg.env.to_dict())
  env_cfg.action_groups = pead_stages(cfg)[stage]
  return PegInHoleEnv(env_cfg)


def make_algo(cfg, env):
  return {"ppo": ppo, "ddpg": ddpg, "sac": sac}[cfg.algo].make(env, cfg[cfg.algo])


class Runner:
  """The compiled pieces of one PEAD stage: seed-vmapped init, iteration and evaluation."""

  def __init__(self, cfg, stage: int):
    self.cfg, self.stage = cfg, stage
    self.env = stage_env(cfg, stage)
    self.algo = make_algo(cfg, self.env)
    n_seeds, n_eval = cfg.train.num_seeds, cfg.train.eval_envs
    self.keys = jax.random.split(jax.random.PRNGKey(cfg.train.seed), n_seeds)
    self.init = jax.jit(jax.vmap(self.algo.init))
    self.iteration = jax.jit(jax.vmap(self.algo.iteration))

    def evaluate(params, stats, key):
      return rollout.evaluate(self.env, lambda obs: self.algo.act(params, stats, obs), key, n_eval)

    self.evaluate = jax.jit(jax.vmap(evaluate))

  def abstract(self):
    return jax.eval_shape(self.init, self.keys)


_RUNNERS: dict = {}


def get_runner(cfg, stage: int) -> Runner:
  """A Runner per (everything its compiled functions depend on, stage), reused within a process."""
  key = json.dumps([cfg.env.to_dict(), cfg.algo, cfg[cfg.algo].to_dict(), pead_stages(cfg)[stage],
                    cfg.train.num_seeds, cfg.train.eval_envs, cfg.train.seed], sort_keys=True)
  if key not in _RUNNERS:
    if len(_RUNNERS) >= 4:
      _RUNNERS.pop(next(iter(_RUNNERS)))
    _RUNNERS[key] = Runner(cfg, stage)
  return _RUNNERS[key]


def _extend(cfg, ts, old_stage: int, new_stage: int, env):
  stages = pead_stages(cfg)
  index, counts = group_index(cfg.env.action_dims, stages[old_stage], stages[new_stage])
  if cfg.algo == "ppo":
    params, opt = jax.vmap(lambda p, o: extend_ppo(p, o, index))(ts.params, ts.opt_state)
  else:
    extend = extend_ddpg if cfg.algo == "ddpg" else extend_sac
    params, opt = jax.vmap(lambda p, o: extend(p, o, index, counts, env.observation_size))(ts.params, ts.opt_state)
    ts = ts.replace(buffer=jax.vmap(lambda b: replay.extend_buffer(b, index))(ts.buffer))
  return ts.replace(params=params, opt_state=opt)


class _StopFlag:
  """A signal handler that only records the signal: the loop saves and stops at the end of its iteration."""

  def __init__(self):
    self.signal = None

  def __call__(self, signum, frame):
    del frame
    self.signal = signum


def train(cfg, workdir: str, log=None, progress: bool = True, init_hook=None) -> dict:
  """Trains (or resumes) under `workdir`; returns the summary printed as JSON by the binary.

  `init_hook(runner, ts) -> ts`, when given, edits a fresh (not resumed) train state before training, e.g. to
  start from a teacher's or a distilled student's parameters (experiments.transfer).
  """
  cfg = validate_rl(ml_collections.ConfigDict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg))
  load_peg(cfg.env.peg)  # the peg file too is checked before the workdir is created or locked
  with WorkdirLock(workdir, "control_brax.train"):  # one run per workdir (runkit.lock)
    stop = _StopFlag()  # from here on a SIGTERM/SIGINT is recorded; the loop saves and stops at its next check
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers only exist there
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
      return _train(cfg, workdir, log, progress, init_hook, stop)
    finally:
      for s, h in old_handlers.items():
        signal.signal(s, h)


def _train(cfg, workdir: str, log, progress: bool, init_hook, stop) -> dict:
  log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
  os.makedirs(workdir, exist_ok=True)
  tc = cfg.train
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints, async_save=False, log=log,
                      flat=True)
  stages = pead_stages(cfg)
  switch_at = list(cfg.pead.switch_steps) if cfg.pead.enabled else []

  # Resume: the stage is in the newest checkpoint's metadata (it fixes the state's shapes).
  stage, ts, meta = 0, None, {}
  for step in reversed(ckpt.steps()):
    try:
      stage = int(ckpt.read_meta(step).get("stage", 0))
      break
    except Exception:  # noqa: BLE001 - an unreadable step is handled (quarantined) by restore_latest below
      continue
  runner = get_runner(cfg, stage)
  abstract = runner.abstract()
  got = ckpt.restore_latest(abstract) if ckpt.steps() else None  # a config mismatch stops here, nothing written
  # The run really starts or resumes: only now is its config written (a rejected invocation leaves it alone).
  cfg_path = os.path.join(workdir, "config.json")
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      saved = json.load(f)
    if saved != json.loads(json.dumps(cfg.to_dict())):
      log(f"note: {cfg_path} differs from this config; the new config is used and saved")
  atomic_write_json(cfg_path, cfg.to_dict(), indent=1)
  if got is not None:
    it, ts, meta = got
    log(f"resumed from iteration {it} (stage {stage}, {int(np.asarray(ts.env_steps)[0])} env steps per seed)")
  else:
    it = 0
    t0 = time.time()
    ts = runner.init(runner.keys)
    if init_hook is not None:
      ts = init_hook(runner, ts)
    log(f"initialised {tc.num_seeds} seed(s) of {cfg.algo} on {cfg.env.peg} in {time.time() - t0:.1f} s")
  wall = float(meta.get("wall_s", 0.0))
  best_return = float(meta.get("best_return", -np.inf))
  stale = int(meta.get("stale_evals", 0))
  writer = MetricsWriter(workdir, resume_step=it)
  next_eval = (int(meta.get("next_eval", tc.eval_every_steps)))
  next_ckpt = (int(meta.get("next_ckpt", tc.checkpoint_every_steps)))
  bar = None
  if progress:
    try:
      from tqdm import tqdm  # noqa: PLC0415

      bar = tqdm(total=tc.total_env_steps, initial=int(np.asarray(ts.env_steps)[0]), unit="step",
                 desc=f"{cfg.algo} {cfg.env.peg}", file=sys.stderr, dynamic_ncols=True)
    except ImportError:
      bar = None

  status, it, ts, stage, wall, last_eval = _loop(
      cfg, log, stop, ckpt, writer, bar, runner, stages, switch_at, it, ts, stage, wall, best_return, stale,
      next_eval, next_ckpt, got is not None)
  if bar is not None:
    bar.close()
  ckpt.close()
  writer.close()
  plot = learning_curve(workdir)
  summary = {"status": status, "iterations": it, "env_steps": int(np.asarray(ts.env_steps)[0]), "stage": stage,
             "wall_s": wall, "learning_curve": plot, "signal": int(stop.signal) if stop.signal else None}
  if last_eval is not None:
    summary.update({k: last_eval[k] for k in ("eval_success_rate", "eval_return", "eval_peak_force_n",
                                               "eval_insertion_time_s", "eval_success_rate_per_seed")})
  return summary


def _loop(cfg, log, stop, ckpt, writer, bar, runner, stages, switch_at, it, ts, stage, wall, best_return, stale,
          next_eval, next_ckpt, resumed):
  """The training iterations; returns (status, iteration, train state, stage, wall seconds, last evaluation)."""
  tc = cfg.train
  per_it = runner.algo.steps_per_iteration
  status, last_eval = "budget", None
  saved_at = [it if resumed else -1]

  def save():
    if saved_at[0] == it:
      return
    if not all_finite({"params": ts.params, "opt_state": ts.opt_state, "obs_stats": ts.obs_stats}):
      raise _NotFinite(it)  # never save a NaN policy: the last good checkpoint stays the newest
    saved_at[0] = it
    state_meta = {"stage": stage, "wall_s": wall, "best_return": best_return, "stale_evals": stale,
                  "next_eval": next_eval, "next_ckpt": next_ckpt}
    ckpt.save(it, ts, state_meta)

  try:
    while True:
      env_steps = int(np.asarray(ts.env_steps)[0])
      if stop.signal:
        status = f"stopped by signal {stop.signal}"
        save()
        log(f"{status}: checkpoint saved at iteration {it} ({env_steps} env steps per seed)")
        break
      if env_steps >= tc.total_env_steps:
        break
      if tc.max_wall_s and wall >= tc.max_wall_s:
        status = "wall_time"
        break
      t0 = time.time()
      ts, m = runner.iteration(ts)
      m = jax.device_get(m)
      it += 1
      wall += time.time() - t0
      env_steps = int(np.asarray(ts.env_steps)[0])
      if bar is not None:
        bar.update(per_it)
      if it % 10 == 0 or it == 1:
        writer.write({"step": it, "env_steps": env_steps, "stage": stage, "wall_s": wall,
                      **{k: float(np.mean(v)) for k, v in m.items()}})
      if env_steps >= next_eval or env_steps >= tc.total_env_steps:
        next_eval += tc.eval_every_steps
        t0 = time.time()
        ev = jax.device_get(runner.evaluate(ts.params, ts.obs_stats, jax.random.split(jax.random.PRNGKey(10_000 + it),
                                                                                      tc.num_seeds)))
        eval_s = time.time() - t0
        last_eval = {"step": it, "env_steps": env_steps, "stage": stage, "wall_s": wall,
                     "eval_success_rate": float(np.mean(ev["success_rate"])),
                     "eval_success_rate_per_seed": [float(x) for x in ev["success_rate"]],
                     "eval_return": float(np.mean(ev["return"])),
                     "eval_peak_force_n": float(np.mean(ev["peak_force_n"])),
                     "eval_insertion_time_s": float(np.nanmean(ev["insertion_time_s"]))
                     if np.isfinite(ev["insertion_time_s"]).any() else None,
                     "eval_return_per_seed": [float(x) for x in ev["return"]],
                     "eval_insertion_time_s_per_seed": [float(x) if np.isfinite(x) else None for x in
                                                        ev["insertion_time_s"]],
                     "eval_peak_force_n_per_seed": [float(x) for x in ev["peak_force_n"]],
                     "eval_episodes": int(np.sum(ev["episodes"])), "eval_s": eval_s}
        writer.write(last_eval)
        if bar is not None:
          bar.set_postfix(success=f"{last_eval['eval_success_rate']:.2f}", stage=stage)
        else:
          log(f"env steps {env_steps}: eval success {last_eval['eval_success_rate']:.3f}, "
              f"return {last_eval['eval_return']:.2f}")
        ret = last_eval["eval_return"]
        stale = 0 if ret > best_return + cfg.pead.plateau_min_delta else stale + 1
        best_return = max(best_return, ret)
        if tc.target_success and min(last_eval["eval_success_rate_per_seed"]) >= tc.target_success:
          status = "target_reached"
          save()
          break
        # PEAD switch
        if stage + 1 < len(stages):
          due = (env_steps >= switch_at[stage]) if cfg.pead.switch == "steps" else (stale >= cfg.pead.plateau_patience)
          if due:
            stage += 1
            runner = get_runner(cfg, stage)
            ts = _extend(cfg, ts, stage - 1, stage, runner.env)
            stale, best_return = 0, -np.inf
            log(f"PEAD: stage {stage} ({stages[stage] or 'one output per axis'}) at {env_steps} env steps")
            writer.write({"step": it, "env_steps": env_steps, "pead_switch_to_stage": stage})
      if env_steps >= next_ckpt:
        next_ckpt += tc.checkpoint_every_steps
        save()
    save()
  except _NotFinite as e:
    steps = ckpt.steps()
    status = (f"stopped: the parameters or optimiser state are not finite at iteration {e.args[0]} (not saved; "
              + (f"last good checkpoint: iteration {steps[-1]})" if steps else "no checkpoint was saved)"))
    log(status)
  return status, it, ts, stage, wall, last_eval


class _NotFinite(Exception):
  """Raised by the loop's save when the state to save is not finite (the iteration in args[0])."""


def exit_if_signalled(summary: dict) -> None:
  """A run stopped by SIGTERM/SIGINT (saved): exit as the signal would have (128 + N), so that a scheduler sees
  the stop and a driver that trains several runs in one process (experiments.transfer, assembly_methods) stops
  too instead of counting the run as finished and starting the next."""
  if summary.get("signal"):
    raise SystemExit(128 + summary["signal"])


def main(argv):
  del argv
  summary = train(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
  print(json.dumps(summary))
  exit_if_signalled(summary)
  if summary["status"].startswith("stopped:"):  # e.g. a non-finite policy (not saved): not a success
    raise SystemExit(3)


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "RL config file (configs/assembly/*.py).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (metrics, checkpoints); re-run to resume.")
  _PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.mark_flags_as_required(["config", "workdir"])
  confspec.run(main)
