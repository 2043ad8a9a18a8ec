"""`python -m pangu_jax.train --config=F --workdir=D`: train Pangu MoE (resumes if D has checkpoints).

One device by default; `config.parallel` sizes the mesh (data x stage x expert x tensor devices). Several hosts:
run the same command on each with `--coordinator_address=host:port --num_processes=N --process_id=i`.

Writes D/metrics.jsonl (training lines: step, loss, tokens_per_s, mfu, ...; evaluation lines: step, val_loss),
TensorBoard events under D/tb, checkpoints under D/checkpoints, and prints a JSON summary as the last line.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

import confspec
from pangu_jax.parallel import multihost
from pangu_jax.train.loop import train


def main(argv):
  del argv
  multihost.initialize(_COORD.value, _NPROC.value, _PID.value, _CPU_COLL.value)
  summary = train(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value and multihost.is_primary())
  if multihost.is_primary():
    print(json.dumps(summary))
  if summary["status"].startswith("stopped:"):
    raise SystemExit(3)
  if summary["signal"]:  # saved and stopped: exit as the signal would have (128 + N), so a scheduler sees it
    raise SystemExit(128 + summary["signal"])


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Pangu config file (configs/pangu/*.py).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (metrics, checkpoints); re-run to resume.")
  _PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar with ETA.")
  _COORD = flags.DEFINE_string("coordinator_address", "", "Multi-host: host:port of process 0.")
  _NPROC = flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
  _PID = flags.DEFINE_integer("process_id", 0, "Multi-host: this process's index.")
  _CPU_COLL = flags.DEFINE_string("cpu_collectives", "gloo", "Multi-host on CPU: collectives implementation.")
  flags.mark_flags_as_required(["config", "workdir"])
  confspec.run(main)
