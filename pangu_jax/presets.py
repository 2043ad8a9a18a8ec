"""Load a preset config from configs/pangu/ by name (for library code, notebooks and tests)."""

from __future__ import annotations

import os

from pangu_jax.config import validate_config
from runkit.configfile import load_config_file

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_preset(name: str):
  """configs/pangu/<name>.py, validated."""
  return validate_config(load_config_file(os.path.join(CONFIG_DIR, "pangu", f"{name}.py")))
