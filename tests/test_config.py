"""Config loading and validation: presets pass; bad values fail with one line naming the field."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from confspec import ConfigError
from pangu_jax.config import base_config, validate_config
from pangu_jax.params import count_params
from pangu_jax.presets import load_preset


@pytest.mark.parametrize("name", ["tiny", "small", "ultra_moe_718b"])
def test_presets_validate(name):
  cfg = load_preset(name)
  assert set(cfg) == {"model", "data", "train", "parallel"}


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda c: c.model.update(num_layers=-1), "config.model.num_layers"),
        (lambda c: c.model.update(moe_impl="sparse"), "config.model.moe_impl"),
        (lambda c: c.train.update(learning_rate=0.0), "config.train.learning_rate"),
        (lambda c: c.model.update(num_dense_layers=9), "config.model.num_dense_layers"),
        (lambda c: c.model.update(top_k=99), "config.model.top_k"),
        (lambda c: c.parallel.update(remat="sometimes"), "config.parallel.remat"),
    ],
)
def test_bad_values_name_the_field_and_range(mutate, field):
  cfg = base_config()
  mutate(cfg)
  with pytest.raises(ConfigError) as err:
    validate_config(cfg)
  msg = str(err.value)
  assert msg.startswith(field + ":") and "allowed" in msg and "\n" not in msg


def test_unknown_key_in_a_config_file_is_rejected():
  cfg = base_config()
  cfg.model.unlikely_field = 3
  with pytest.raises(ConfigError, match=r"^config\.model\.unlikely_field: unknown field"):
    validate_config(cfg)


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "override, field",
    [("--config.model.num_layers=-2", "config.model.num_layers"), ("--config.model.no_such=1", "config.model.no_such")],
)
def test_binary_prints_one_line_naming_the_field(override, field):
  proc = _run("pangu_jax.info", "--config=configs/pangu/tiny.py", override)
  assert proc.returncode == 2
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and field in lines[0], proc.stderr


def test_unknown_key_in_a_config_file_via_binary(tmp_path):
  f = tmp_path / "bad.py"
  f.write_text("from pangu_jax.config import base_config\n\ndef get_config():\n  c = base_config()\n"
               "  c.train.stpes = 5\n  return c\n")
  proc = _run("pangu_jax.info", f"--config={f}")
  assert proc.returncode == 2 and "config.train.stpes: unknown field" in proc.stderr


def test_info_on_the_718b_preset():
  proc = _run("pangu_jax.info", "--config=configs/pangu/ultra_moe_718b.py")
  assert proc.returncode == 0, proc.stderr
  info = json.loads(proc.stdout.strip().splitlines()[-1])
  assert 710e9 <= info["total_params"] <= 726e9
  assert 37e9 <= info["activated_params"] <= 41.5e9
  assert info["mtp_params"] > 0 and sum(info["breakdown"].values()) == info["total_params"]


def test_param_count_matches_allocated_tiny_model():
  """Abstract counting equals counting real arrays (and the closed form for the routed experts)."""
  import jax

  from pangu_jax.model import transformer

  cfg = load_preset("tiny").model
  params = transformer.init_params(jax.random.key(0), cfg)
  real = sum(x.size for k, v in params.items() if k != "mtp" for x in jax.tree.leaves(v))
  counts = count_params(cfg)
  assert counts["total_params"] == real
  routed = (cfg.num_layers - cfg.num_dense_layers) * cfg.num_routed_experts * 3 * cfg.hidden_size * cfg.expert_ffn_dim
  assert counts["breakdown"]["routed_experts"] == routed
  assert counts["total_params"] - counts["activated_params"] == routed - routed * cfg.top_k // cfg.num_routed_experts
  assert os.path.exists(os.path.join(REPO, "configs", "pangu", "tiny.py"))


def test_torch_imports_in_the_project_environment():
  """`import torch` works (torch_npu, if ever installed without CANN, must not break it)."""
  proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.ones(3).sum().item())"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and proc.stdout.strip() == "3.0", proc.stderr


@pytest.mark.parametrize("args, line", [
    (["pangu_jax.info", "--config=configs/pangu/tiny.py", "--nosuchflag"], "flag error: Unknown command line flag"),
    # a default config applies the overrides as the flag is defined (confspec.flag_errors)
    (["experiments.assembly_methods", "--config.no_such=1"], "config error: config.no_such: unknown field"),
])
def test_bad_flag_or_override_is_one_line_exit_2(args, line):
  proc = _run(*args)
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(line), proc.stderr
