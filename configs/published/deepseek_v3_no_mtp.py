"""DeepSeek-V3 without its MTP module (configs/published/deepseek_v3.py, mtp_depth 0): the model of the
published runs that report "w/o MTP" (Megatron-Bridge 25.11's GB200/GB300 rows)."""

import os

from runkit.configfile import load_config_file


def get_config():
  cfg = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "deepseek_v3.py"))
  cfg.model.mtp_depth = 0
  return cfg
