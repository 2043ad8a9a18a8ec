"""Bad inputs and faults, as a new user meets them (issue 25): every binary, run as a subprocess, on a table of
mistakes. Each row asserts the exit code (2 for a rejected invocation), exactly one line on stderr naming the
problem, no traceback, and that the workdir it was pointed at is byte-identical afterwards (its checkpoints,
config.json and metrics.jsonl; `.lock` is left out: a trainer that gets as far as taking the lock rewrites its
holder line, which is the lock's job). No stderr line is filtered: the rows expect nothing else there.

Then the torch_npu stub: a `torch_npu` distribution whose import raises the libhccl ImportError, registered as a
`torch.backends` entry point, so that torch's own backend autoload fails the way README "Ascend NPUs" describes
(`RuntimeError: Failed to load the backend extension: torch_npu` from `import torch`). Every binary that touches
torch must still run, on CPU, and the ones that choose a torch device say why in one line.

Cheap on purpose: one tiny trained Pangu workdir for the module (trained under the stub, so that run is itself
the trainer's stub check), every rejected row fails before anything is compiled, and the control_brax rows that
need a trained agent (an MJX compile) are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

MICRO = ["--config.model.num_layers=2", "--config.model.num_dense_layers=1", "--config.model.hidden_size=32",
         "--config.model.num_heads=2", "--config.model.q_lora_rank=16", "--config.model.kv_lora_rank=16",
         "--config.model.qk_nope_head_dim=8", "--config.model.qk_rope_head_dim=8", "--config.model.v_head_dim=8",
         "--config.model.num_routed_experts=4", "--config.model.top_k=2", "--config.model.expert_ffn_dim=16",
         "--config.model.dense_ffn_dim=32", "--config.train.batch_size=4", "--config.train.seq_len=32",
         "--config.train.eval_batches=1", "--config.train.warmup_steps=1", "--config.train.ep_group_size=2",
         "--config.train.steps=2", "--config.train.eval_every=2", "--config.train.checkpoint_every=2"]
TINY_PPO = ["--config.env.peg=square", "--config.env.episode_steps=20", "--config.ppo.num_envs=8",
            "--config.ppo.rollout_len=8", "--config.ppo.minibatches=2", "--config.ppo.epochs=2",
            "--config.ppo.hidden=16,16", "--config.train.eval_envs=8", "--config.train.num_seeds=1",
            "--config.train.total_env_steps=64"]
PEG = "from control_brax.geometry import base_peg\n\n\ndef get_config():\n  c = base_peg()\n  {}\n  return c\n"


def _run(args, env=None, cwd=REPO, timeout=300):
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _snapshot(workdir) -> dict:
  """Every file of the run but its lock, by relative path: bytes."""
  if workdir is None or not os.path.isdir(workdir):
    return {}
  out = {}
  for d, _, files in os.walk(workdir):
    for f in files:
      p = os.path.join(d, f)
      rel = os.path.relpath(p, workdir)
      if rel != ".lock" and not rel.startswith("tb"):
        with open(p, "rb") as fh:
          out[rel] = fh.read()
  return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Bad input files: config files (missing, broken, without get_config), data files, implausible pegs."""
  d = tmp_path_factory.mktemp("bad")
  (d / "broken.py").write_text("def get_config(:\n")
  (d / "noget.py").write_text("X = 1\n")
  (d / "empty.txt").write_bytes(b"")
  (d / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 60_000, np.uint8).tobytes())
  (d / "small.txt").write_text("hello world. " * 100)
  (d / "a_file").write_text("not a directory\n")
  (d / "meter_peg.py").write_text(PEG.format("c.rects = ((0.0, 0.0, 0.5, 0.5),)"))
  (d / "nan_peg.py").write_text(PEG.format("c.mass = float('nan')"))
  (d / "loose_peg.py").write_text(PEG.format("c.rects = ((0.0, 0.0, 0.0025, 0.0025),)\n  c.clearance = 0.005"))
  return {"missing": str(d / "missing.py"), **{p.stem: str(p) for p in d.iterdir()}, "dir": str(d)}


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
  """A sys.path entry holding a torch_npu that fails without CANN, registered as a torch.backends entry point."""
  d = tmp_path_factory.mktemp("stub")
  (d / "torch_npu").mkdir()
  (d / "torch_npu" / "__init__.py").write_text(
      "raise ImportError('libhccl.so: cannot open shared object file: No such file or directory')\n")
  info = d / "torch_npu-2.13.0.dist-info"
  info.mkdir()
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch_npu\nVersion: 2.13.0\n")
  (info / "entry_points.txt").write_text("[torch.backends]\ntorch_npu = torch_npu:_autoload\n")
  env = {k: v for k, v in os.environ.items() if k != "TORCH_DEVICE_BACKEND_AUTOLOAD"}
  env["PYTHONPATH"] = os.pathsep.join([str(d), REPO, *filter(None, [os.environ.get("PYTHONPATH")])])
  return env


@pytest.fixture(scope="module")
def pangu(tmp_path_factory, stub):
  """A tiny trained Pangu workdir (2 steps), trained under the torch_npu stub."""
  w = str(tmp_path_factory.mktemp("pangu") / "run")
  proc = _run(["pangu_jax.train", "--config=configs/pangu/tiny.py", f"--workdir={w}", "--progress=false", *MICRO],
              env=stub)
  return w, proc


def test_stub_breaks_a_plain_torch_import(stub):
  """The stub is faithful: without the guard, `import torch` fails exactly as the README says."""
  proc = subprocess.run([sys.executable, "-c", "import torch"], env=stub, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 1 and "Failed to load the backend extension: torch_npu" in proc.stderr


def test_pangu_trainer_runs_under_the_stub(pangu):
  _, proc = pangu
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.count("torch device backends not loaded (torch_npu;") == 1  # the one line saying why
  assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "completed"


# (id, binary and flags ({f} = the bad files, {w} = the trained Pangu workdir, {t} = this row's own directory),
#  exit code, what the one stderr line must contain); every row also checks the trained workdir is untouched
ROWS = [
    ("train-config-missing", "pangu_jax.train --config={f[missing]} --workdir={t}/w", 2,
     "--config: config file not found"),
    ("train-config-broken", "pangu_jax.train --config={f[broken]} --workdir={t}/w", 2,
     "line 1: syntax error"),
    ("info-config-no-get-config", "pangu_jax.info --config={f[noget]}", 2, "has no get_config() function"),
    ("export-config-missing", "npu_backend.export --config={f[missing]} --out={t}/out", 2,
     "--config: config file not found"),
    ("parity-config-broken", "npu_backend.parity --config={f[broken]}", 2, "line 1: syntax error"),
    ("generate-config-broken", "pangu_jax.generate --config={f[broken]}", 2, "line 1: syntax error"),
    ("torch-generate-no-export", "npu_backend.generate --export={t}/none", 2,
     "no decoder graphs here (FileNotFoundError)"),
    ("rl-train-config-missing", "control_brax.train --config={f[missing]} --workdir={t}/w", 2,
     "--config: config file not found"),
    ("rl-evaluate-config-broken", "control_brax.evaluate --config={f[broken]} --workdir={t}/w", 2,
     "line 1: syntax error"),
    ("transfer-config-broken", "experiments.transfer --config={f[broken]} --source=square --target=l_shape "
     "--out={t}/out", 2, "line 1: syntax error"),
    ("train-unknown-key", "pangu_jax.train --config=configs/pangu/tiny.py --workdir={w} --config.model.hidden_sizee=3",
     2, 'config.model.hidden_sizee: unknown field (from --config.model.hidden_sizee=3); did you mean "hidden_size"?'),
    ("train-empty-data", "pangu_jax.train --config=configs/pangu/tiny.py --workdir={w} {micro} "
     "--config.data.path={f[empty]}", 2, "holds no text (an empty corpus)"),
    ("train-binary-data", "pangu_jax.train --config=configs/pangu/tiny.py --workdir={w} {micro} "
     "--config.data.path={f[random]}", 2, "random.bin is not UTF-8 text"),
    ("train-small-corpus", "pangu_jax.train --config=configs/pangu/tiny.py --workdir={w} {micro} "
     "--config.data.path={f[small]}", 2, "needs at least"),
    ("parity-lowering-without-torch-npu", "npu_backend.parity --workdir={w} --batch=1 --seq_len=8 "
     "--lowering=torch_npu", 2, "--lowering=torch_npu needs a working torch_npu"),
    ("transfer-negative-budget", "experiments.transfer --source=square --target=l_shape --budget_steps=-5 "
     "--out={t}/out", 2, "--budget_steps: -5 is out of range"),
    ("transfer-unknown-method", "experiments.transfer --source=square --target=l_shape --methods=foo --out={t}/out",
     2, "--methods: 'foo' is not a method"),
    ("train-workdir-is-a-file", "pangu_jax.train --config=configs/pangu/tiny.py --workdir={f[a_file]}", 2,
     "--workdir: {f[a_file]} exists and is not a directory"),
    ("rl-train-workdir-under-a-file", "control_brax.train --config=configs/assembly/ppo_square.py "
     "--workdir={f[a_file]}/run", 2, "(Not a directory)"),
    ("export-out-is-a-file", "npu_backend.export --workdir={w} --out={f[a_file]}", 2,
     "--out: {f[a_file]} exists and is not a directory"),
    ("transfer-out-is-a-file", "experiments.transfer --source=square --target=l_shape --out={f[a_file]}", 2,
     "--out: {f[a_file]} exists and is not a directory"),
    ("rl-train-meter-peg", "control_brax.train --config=configs/assembly/ppo_square.py --workdir={t}/w "
     "--config.env.peg={f[meter_peg]}", 2, "an implausible peg"),
    ("rl-train-nan-mass-peg", "control_brax.train --config=configs/assembly/ppo_square.py --workdir={t}/w "
     "--config.env.peg={f[nan_peg]}", 2, "peg.mass: nan is not a number"),
    ("rl-train-peg-without-get-config", "control_brax.train --config=configs/assembly/ppo_square.py --workdir={t}/w "
     "--config.env.peg={f[noget]}", 2, "has no get_config() function"),
    ("rl-train-loose-peg", "control_brax.train --config=configs/assembly/ppo_square.py --workdir={t}/w "
     "--config.env.peg={f[loose_peg]}", 2, "is not a fit"),
    ("rl-train-unknown-backend", "control_brax.train --config=configs/assembly/ppo_square.py --workdir={t}/w "
     "--config.env.backend=bullet", 2, "env.backend: 'bullet' is not allowed; allowed: one of 'auto', 'mjx', 'mujoco'"),
    ("rl-train-unknown-algo", "control_brax.train --config=configs/assembly/ppo_square.py --workdir={t}/w "
     "--config.algo=a2c", 2, "config.algo: 'a2c' is not allowed; allowed: one of 'ppo', 'ddpg', 'sac'"),
]


@pytest.mark.parametrize("args,code,needle", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_a_mistake_is_one_line(args, code, needle, files, pangu, tmp_path):
  workdir = pangu[0]
  argv = args.format(f=files, w=workdir, t=tmp_path, micro=" ".join(MICRO)).split()
  before = _snapshot(workdir)
  assert before, "the trained workdir is missing"
  proc = _run(argv)
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == code, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
  assert needle.format(f=files) in lines[0], lines[0]
  assert "\\n" not in lines[0]
  assert not [ln for ln in proc.stdout.splitlines() if ln.startswith("Failed to import")], proc.stdout
  assert _snapshot(workdir) == before  # nothing written, moved or deleted in the run it was pointed at
  assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "w")  # nothing created either


@pytest.mark.parametrize("extra", [[], ["--mock_npu"], ["--device=npu"]], ids=["auto", "mock_npu", "device_npu"])
def test_parity_runs_under_the_stub(extra, pangu, stub):
  proc = _run(["npu_backend.parity", f"--workdir={pangu[0]}", "--batch=1", "--seq_len=8", *extra], env=stub)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  backend = [ln for ln in proc.stdout.splitlines() if ln.startswith("backend:")]
  assert len(backend) == 1 and "parity PASSED" in proc.stdout, proc.stdout
  if "--mock_npu" in extra:
    assert "backend: npu (mock torch_npu" in backend[0]
  else:
    assert "backend: cpu (torch_npu unavailable (ImportError: libhccl.so" in backend[0]
  assert not proc.stderr.strip(), proc.stderr  # readers print no orbax notices


def test_export_runs_under_the_stub(pangu, stub, tmp_path):
  before = _snapshot(pangu[0])
  proc = _run(["npu_backend.export", f"--workdir={pangu[0]}", f"--out={tmp_path / 'export'}", "--seq_len=8"],
              env=stub)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "backend: cpu (torch_npu unavailable (ImportError: libhccl.so" in proc.stdout, proc.stdout
  assert (tmp_path / "export" / "graph.json").exists()
  assert _snapshot(pangu[0]) == before


def _listing(workdir) -> list:
  return sorted(os.path.relpath(os.path.join(d, n), workdir) for d, ds, fs in os.walk(workdir) for n in ds + fs)


def test_generate_reads_without_writing(pangu):
  """A reader creates nothing in the workdir it reads (no directory, no file)."""
  before = _listing(pangu[0])
  proc = _run(["pangu_jax.generate", f"--workdir={pangu[0]}", "--max_tokens=2", "--nowarmup"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _listing(pangu[0]) == before


def test_mujoco_prints_no_warp_notice_and_writes_no_log_file(tmp_path):
  """control_brax modules import MuJoCo through control_brax.mujoco_setup: no "Failed to import warp" on stdout, and a
  C-engine warning (an exploding velocity) goes to the console, not to MUJOCO_LOG.TXT in the current directory."""
  code = ("import control_brax.gym_env, mujoco\n"
          "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><body><freejoint/><geom size=\".1\"/></body>"
          "</worldbody></mujoco>')\n"
          "d = mujoco.MjData(m); d.qvel[:] = 1e300; mujoco.mj_step(m, d)\n"
          "assert d.warning[mujoco.mjtWarning.mjWARN_BADQVEL].number == 1\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])]))
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Failed to import" not in proc.stdout + proc.stderr
  assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


# ----------------------------------------------------------------------------- control_brax: a trained agent


@pytest.fixture(scope="module")
def agent(tmp_path_factory, stub):
  """A tiny PPO run (one iteration), trained under the torch_npu stub."""
  w = str(tmp_path_factory.mktemp("rl") / "run")
  proc = _run(["control_brax.train", "--config=configs/assembly/ppo_square.py", f"--workdir={w}", "--progress=false",
               *TINY_PPO], env=stub, timeout=600)
  return w, proc


RL_ROWS = [
    ("rl-train-mismatch", ["control_brax.train", "--config.ppo.hidden=32,32"], 2, "does not match this config"),
    ("rl-train-loose-peg-on-a-run", ["control_brax.train", "--config.env.peg={loose_peg}"], 2, "is not a fit"),
    ("rl-evaluate-no-episodes", ["control_brax.evaluate", "--episodes=0"], 2, "--episodes: 0 is out of range"),
    ("rl-evaluate-seed-index", ["control_brax.evaluate", "--seed_index=5"], 2, "--seed_index: 5 is out of range"),
]


@pytest.mark.slow
def test_a_trained_agent_under_the_stub_then_readers_and_mistakes(agent, files):
  """One test on the one trained agent (a module fixture would be trained again on every xdist worker that runs a
  test using it, ~80 s each): the trainer under the stub; evaluate reads without writing; every RL row is one line
  and leaves the workdir byte-identical."""
  workdir, proc = agent
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1])["env_steps"] == 64
  assert "Failed to import" not in proc.stdout
  assert proc.stderr.count("torch device backends not loaded (torch_npu;") == 1  # the one line saying why

  before, files_before = _listing(workdir), _snapshot(workdir)
  ev = _run(["control_brax.evaluate", "--config=configs/assembly/ppo_square.py", f"--workdir={workdir}", *TINY_PPO,
             "--episodes=2", "--json"])
  assert ev.returncode == 0 and not ev.stderr.strip(), ev.stderr[-3000:]
  assert json.loads(ev.stdout.strip().splitlines()[-1])["episodes"] >= 2
  assert ev.stdout.strip().count("\n") == 0  # the JSON line only: no "Failed to import warp" before it
  assert _listing(workdir) == before and _snapshot(workdir) == files_before

  for row, (binary, *extra), code, needle in RL_ROWS:
    got = _run([binary, "--config=configs/assembly/ppo_square.py", f"--workdir={workdir}", *TINY_PPO,
                *[a.format(**files) for a in extra]])
    lines = [ln for ln in got.stderr.splitlines() if ln.strip()]
    assert got.returncode == code and "Traceback" not in got.stderr and len(lines) == 1, (row, got.stderr[-3000:])
    assert needle in lines[0], (row, lines[0])
    assert _snapshot(workdir) == files_before, row
    assert not os.path.exists(workdir + "/checkpoints.quarantine"), row
