"""Where a model's config and weights come from: a training workdir, or a config file with fresh weights.

Every binary that reads a model (`generate`, `npu_backend.export`, `npu_backend.parity`, the studies) takes
`--workdir=D` (its `config.json` and newest intact checkpoint) or `--config=F` (fresh weights from the config's
seed) and calls `load_model`.
"""

from __future__ import annotations

import json
import os

from confspec import ConfigError, RunError


def load_params_for_inference(workdir: str):
  """(cfg, params) from a training workdir: its config.json and its latest intact checkpoint."""
  from pangu_jax.config import validate_config, with_defaults  # noqa: PLC0415
  from pangu_jax.train.state import inference_train_state  # noqa: PLC0415
  from runkit.checkpoint import Checkpointer  # noqa: PLC0415

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise RunError(f"--workdir: {workdir} has no config.json (not a pangu_jax.train workdir)")
  with open(path) as f:
    cfg = validate_config(with_defaults(json.load(f)))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep_checkpoints, async_save=False,
                      read_only=True)
  got = ckpt.restore_latest(inference_train_state(cfg))
  ckpt.close()
  if got is None:
    raise RunError(f"--workdir: no intact checkpoint under {workdir}/checkpoints")
  return cfg, got[1]["params"]


def load_model(config=None, workdir: str | None = None, seed: int | None = None):
  """(cfg, params): the workdir's trained weights if `workdir`, else fresh weights for `config` (a ConfigDict)
  drawn with `seed` (default: `config.train.seed`). Exactly one source is needed."""
  if workdir:
    return load_params_for_inference(workdir)
  if config is None:
    raise ConfigError("--config or --workdir: one of them is required")
  import jax  # noqa: PLC0415

  from pangu_jax.config import validate_config  # noqa: PLC0415
  from pangu_jax.model import transformer  # noqa: PLC0415

  cfg = validate_config(config)
  params = transformer.init_params(jax.random.key(cfg.train.seed if seed is None else seed), cfg.model)
  return cfg, params
