"""Two processes on localhost through `jax.distributed` (gloo CPU collectives) train exactly like one process.

Both runs use the same 4-device mesh (data 2 x expert 2): two processes with 2 CPU devices each, against one
process with 4; the losses of every step must agree to fp32 tolerance.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO

ROOT = REPO
OVERRIDES = ["--config.model.num_layers=3", "--config.model.hidden_size=64", "--config.model.expert_ffn_dim=32",
             "--config.model.dense_ffn_dim=128", "--config.train.batch_size=8", "--config.train.seq_len=32",
             "--config.train.steps=8", "--config.train.log_every=1", "--config.train.eval_every=8",
             "--config.train.eval_batches=1", "--config.train.checkpoint_every=8", "--config.train.warmup_steps=2",
             "--config.train.ep_group_size=2", "--config.data.max_bytes=100000", "--config.parallel.data=2",
             "--config.parallel.expert=2", "--noprogress"]


def _cmd(workdir, extra=()):
  return [sys.executable, "-m", "pangu_jax.train", "--config=configs/pangu/tiny.py", f"--workdir={workdir}",
          *OVERRIDES, *extra]


def _env(devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
  return env


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["loss"] for r in map(json.loads, f) if "loss" in r]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  multi = tmp_path / "multi"
  procs = [subprocess.Popen(_cmd(multi, [f"--coordinator_address=localhost:{port}", "--num_processes=2",
                                         f"--process_id={i}"]), cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  single = tmp_path / "single"
  r = subprocess.run(_cmd(single), cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  a, b = _losses(multi), _losses(single)
  assert len(a) == len(b) == 8
  assert max(abs(x - y) / abs(y) for x, y in zip(a, b)) < 1e-5, (a, b)
  assert json.loads(outs[0][0].strip().splitlines()[-1])["step"] == 8  # process 0 reports; process 1 stays quiet
  assert not [ln for ln in outs[1][0].splitlines() if ln.startswith("{")]
