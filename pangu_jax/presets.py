"""Load a preset config from configs/pangu/ by name (for library code, notebooks and tests)."""

from __future__ import annotations

import importlib.util
import os

from pangu_jax.config import validate_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config_file(path: str):
  """get_config() of a config file, as absl config_flags would load it."""
  spec = importlib.util.spec_from_file_location("_cfg_" + os.path.basename(path)[:-3], path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"config file not found: {path}")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def load_preset(name: str):
  """configs/pangu/<name>.py, validated."""
  return validate_config(load_config_file(os.path.join(CONFIG_DIR, "pangu", f"{name}.py")))
