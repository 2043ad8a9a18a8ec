"""`python -m pangu_jax.info --config=F`: parameter counts by abstract evaluation.

Prints a human-readable table, then one JSON line (always): total_params and
activated_params (MTP excluded), mtp_params, breakdown. No weights are allocated,
so the 718B config runs in seconds on a laptop.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

import confspec
from pangu_jax.config import validate_config
from pangu_jax.params import count_params


def main(argv):
  del argv
  cfg = validate_config(_CONFIG.value)
  counts = count_params(cfg.model)
  for k, v in sorted(counts["breakdown"].items(), key=lambda kv: -kv[1]):
    print(f"  {k:<16} {v / 1e9:10.3f} B")
  print(f"total (no MTP)     {counts['total_params'] / 1e9:10.3f} B")
  print(f"activated / token  {counts['activated_params'] / 1e9:10.3f} B")
  print(f"MTP                {counts['mtp_params'] / 1e9:10.3f} B")
  print(json.dumps(counts))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Pangu config file (configs/pangu/*.py).")
  flags.mark_flags_as_required(["config"])
  confspec.run(main)
