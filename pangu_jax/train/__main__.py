"""`python -m pangu_jax.train --config=F --workdir=D`: train Pangu MoE on one device (resumes if D has checkpoints).

Writes D/metrics.jsonl (training lines: step, loss, tokens_per_s, mfu, ...; evaluation lines: step, val_loss),
TensorBoard events under D/tb, checkpoints under D/checkpoints, and prints a JSON summary as the last line.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

import confspec
from pangu_jax.train.loop import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pangu config file (configs/pangu/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (metrics, checkpoints); re-run to resume.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar with ETA.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  summary = train(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
  print(json.dumps(summary))
  if summary["status"].startswith("stopped:"):
    raise SystemExit(3)


if __name__ == "__main__":
  confspec.run(main)
