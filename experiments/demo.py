"""`python -m experiments.demo`: the project's main job end to end on embedded defaults (`make demo`).

Stages (each a real binary of this repository, run as a subprocess with its output streamed; short versions of
the full runs so the whole job fits in about 15 minutes on a 2-core CPU):

  1. simulate   calibrate this machine, then search parallel plans for the tiny model on it and pick the best
  2. train      the tiny Pangu MoE on the embedded corpus (short run)
  3. generate   greedy and MTP self-speculative generation from the trained checkpoint (acceptance length)
  4. export     the trained model to PyTorch (graph + safetensors), then the layer-by-layer parity check
  5. rl         PPO + compliance (+ PEAD, not in --quick) on the L-shaped peg (short budget), evaluation, an
                episode strip

Every figure of the report (`<out>/report.md`, plots beside it) is read back from the files these stages wrote
(`experiments/demo_report.py`); a failing stage is reported, the later stages still run where they can, and the
report says which stages failed. Re-running resumes the training stages from their checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import flags

import confspec

PY = sys.executable


def plan(out: str, quick: bool) -> dict[str, list[list[str]]]:
  """The commands of each stage (lists of argv)."""
  pangu = os.path.join(out, "pangu")
  rl = os.path.join(out, "rl")
  steps = 30 if quick else 400
  train_over = [f"--config.train.steps={steps}", f"--config.train.eval_every={steps // 2}",
                f"--config.train.checkpoint_every={steps // 2}", "--config.train.log_every=10",
                f"--config.train.warmup_steps={min(100, steps // 4)}"]
  rl_steps = 8192 if quick else 122_880
  rl_over = [f"--config.train.total_env_steps={rl_steps}", f"--config.train.eval_every_steps={rl_steps // 4}",
             f"--config.train.checkpoint_every_steps={rl_steps // 2}"]
  # PEAD's switch compiles a second training program (the full action layout); the quick run (the suite's smoke
  # version) leaves it to tests/control_brax/test_rl.py, which checks the switch itself
  rl_over += ["--config.pead.enabled=False"] if quick else ["--config.pead.enabled=True",
                                                             f"--config.pead.switch_steps={rl_steps // 3}"]
  if quick:
    rl_over += ["--config.ppo.num_envs=64", "--config.train.eval_envs=16"]
  sim = os.path.join(out, "sim")
  hw = os.path.join(sim, "this_machine.py")
  return {
      "simulate": [
          [PY, "-m", "pangu_jax.simulate", "--calibrate", f"--out={hw}", "--noprogress",
           *(["--quick"] if quick else [])],
          [PY, "-m", "pangu_jax.simulate", "--config=configs/pangu/tiny.py", f"--hardware={hw}", "--search",
           "--json", ">", os.path.join(sim, "search.jsonl")],
      ],
      "train": [[PY, "-m", "pangu_jax.train", "--config=configs/pangu/tiny.py", f"--workdir={pangu}", "--noprogress",
                 *train_over]],
      "generate": [
          [PY, "-m", "pangu_jax.generate", f"--workdir={pangu}", "--prompt=The ", "--max_tokens=48", "--json",
           ">", os.path.join(out, "generate_plain.jsonl")],
          [PY, "-m", "pangu_jax.generate", f"--workdir={pangu}", "--prompt=The ", "--max_tokens=48", "--speculative",
           "--json", ">", os.path.join(out, "generate_speculative.jsonl")],
      ],
      "export": [
          [PY, "-m", "npu_backend.export", f"--workdir={pangu}", f"--out={os.path.join(out, 'export')}"],
          [PY, "-m", "npu_backend.parity", f"--workdir={pangu}", "--json", ">", os.path.join(out, "parity.jsonl")],
      ],
      "rl": [
          [PY, "-m", "control_brax.train", "--config=configs/assembly/ppo_l_shape.py", f"--workdir={rl}",
           "--noprogress", *rl_over],
          [PY, "-m", "control_brax.evaluate", "--config=configs/assembly/ppo_l_shape.py", f"--workdir={rl}",
           f"--episodes={32 if quick else 256}", "--json", *rl_over, ">", os.path.join(out, "rl_eval.jsonl")],
          [PY, "-m", "control_brax.render", f"--workdir={rl}", f"--out={rl}"],
      ],
  }


def _run(argv: list[str], log) -> None:
  """Runs one command, streaming its output with a prefix; `> FILE` at the end captures stdout into FILE."""
  target = None
  if ">" in argv:
    i = argv.index(">")
    argv, target = argv[:i], argv[i + 1]
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
  name = " ".join(a for a in argv[2:4])
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    log(f"    | {line.rstrip()[:200]}")
  proc.wait()
  if target is not None:
    with open(target, "w") as f:
      f.writelines(ln for ln in lines if ln.startswith("{"))
  if proc.returncode != 0:
    raise RuntimeError(f"`{name}` exited with {proc.returncode}: {lines[-1].strip() if lines else ''}")


def run(out: str, quick: bool = False, stages=None, log=print) -> dict:
  """Runs the stages, writes the report, returns {stage: "ok" | "failed: ..."}."""
  from experiments import demo_report  # noqa: PLC0415

  os.makedirs(out, exist_ok=True)
  cmds = plan(out, quick)
  status, t_all = {}, time.perf_counter()
  for name in stages or list(cmds):
    t0 = time.perf_counter()
    log(f"[demo] {name} ...")
    try:
      for argv in cmds[name]:
        _run(list(argv), log)
      status[name] = "ok"
    except Exception as e:  # noqa: BLE001 (a failing stage must not stop the later ones)
      status[name] = f"failed: {e}"
    log(f"[demo] {name}: {status[name]} ({time.perf_counter() - t0:.0f}s)")
  with open(os.path.join(out, "stages.json"), "w") as f:
    json.dump({"status": status, "quick": quick, "wall_s": time.perf_counter() - t_all}, f, indent=1)
  path = demo_report.write_report(out)
  log(f"[demo] report: {path}")
  return status


def main(argv):
  del argv
  status = run(_OUT.value, _QUICK.value, _STAGES.value)
  failed = [k for k, v in status.items() if v != "ok"]
  print(os.path.abspath(os.path.join(_OUT.value, "report.md")))
  if failed:
    print(f"[demo] failed stages: {', '.join(failed)}")
    sys.exit(1)


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _OUT = flags.DEFINE_string("out", "runs/demo", "Output directory (report.md, plots, every stage's files).")
  _QUICK = flags.DEFINE_bool("quick", False, "Tiny stages (the test suite's smoke version, ~3 minutes).")
  _STAGES = flags.DEFINE_list("stages", ["simulate", "train", "generate", "export", "rl"], "Stages to run.")
  confspec.run(main)
