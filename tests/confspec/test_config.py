"""Config loading and validation: presets pass; bad values fail with one line naming the field."""

import glob
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


# ----------------------------------------------------------------------------- one declaration per field, lists


def test_a_field_declared_once_gives_its_default_and_its_validation():
  from confspec import Field, defaults, validate

  schema = {"s": {"n": Field(int, 4, lo=1, doc="a count"), "w": Field(tuple, (64, 64), item=int, lo=1),
                  "x": Field(float, 1, lo=0)}}
  cfg = defaults(schema)
  assert cfg.s.n == 4 and cfg.s.w == (64, 64) and isinstance(cfg.s.x, float)
  validate(cfg, schema)
  cfg.s.n = 0
  with pytest.raises(ConfigError, match=r"^config\.s\.n: 0 is out of range; allowed: an integer >= 1$"):
    validate(cfg, schema)
  with pytest.raises(ConfigError, match=r"^config\.s\.n: 0 is out of range"):  # a default breaking its own range
    defaults({"s": {"n": Field(int, 0, lo=1)}})


def test_every_pangu_field_is_declared_once_with_its_default():
  from pangu_jax.config import SCHEMA

  cfg = base_config()
  for section, fields in SCHEMA.items():
    assert set(cfg[section]) == set(fields), section
    for name, field in fields.items():
      assert cfg[section][name] == field.default and type(cfg[section][name]) is type(field.default), name


def test_rl_defaults_depend_on_the_algorithm_through_one_table():
  from control_brax.rl.config import base_rl_config

  assert base_rl_config("ppo").train.total_env_steps == 1_000_000
  assert base_rl_config("ddpg").train.total_env_steps == 300_000 and base_rl_config("ddpg").algo == "ddpg"
  assert base_rl_config("sac").train.total_env_steps == 300_000 and base_rl_config("sac").algo == "sac"
  with pytest.raises(ConfigError,
                     match=r"^config\.algo: 'a2c' is not allowed; allowed: one of 'ppo', 'ddpg', 'sac'$"):
    base_rl_config("a2c")


@pytest.mark.parametrize("section, field, value, msg", [
    ("ppo", "hidden", (64, "abc"), "config.ppo.hidden: item 1 'abc' is not an integer; allowed: a list of integers"),
    ("ddpg", "lcrl_hidden", (0,), "config.ddpg.lcrl_hidden: item 0 0 is out of range; allowed: a list of integers"),
    ("env", "action_dims", ("x", "x"), "config.env.action_dims: item 1 'x' repeats an earlier item"),
    ("env", "action_groups", (("x", "q"),), "config.env.action_groups: item 0.1 'q' is not allowed"),
    ("env", "adm_k", (1.0, 2.0), "config.env.adm_k: (1.0, 2.0) has 2 items; allowed: a list of 6 numbers > 0"),
    ("pead", "switch_steps", (100, 2.5), "config.pead.switch_steps: item 1 2.5 is not an integer"),
])
def test_a_list_field_names_the_bad_item_in_one_line(section, field, value, msg):
  from control_brax.rl.config import base_rl_config, validate_rl

  cfg = base_rl_config("ppo")
  cfg[section][field] = value
  with pytest.raises(ConfigError) as err:
    validate_rl(cfg)
  assert str(err.value).startswith(msg) and "\n" not in str(err.value), str(err.value)


def test_list_overrides_on_the_command_line_become_lists():
  """`--config.ppo.hidden=32,32` (the documented form), Python literals for nested lists, '' = the empty list."""
  from absl import flags
  from ml_collections import config_flags

  import confspec
  from control_brax.rl.config import validate_rl

  confspec.install_flag_parsers()
  argv = ["prog", f"--config={REPO}/configs/assembly/ppo_square.py", "--config.ppo.hidden=32,32",
          "--config.ddpg.hidden=128", "--config.env.action_dims=x,y,rz",
          "--config.env.action_groups=(('x', 'y'), ('rz',))", "--config.pead.switch_steps=",
          "--config.env.adm_k=(100, 100, 100, 1, 1, 1)"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", sys_argv=argv, flag_values=fv)
  fv(argv)
  cfg = fv.config
  assert cfg.ppo.hidden == (32, 32) and cfg.ddpg.hidden == (128,) and cfg.env.action_dims == ("x", "y", "rz")
  assert cfg.env.action_groups == (("x", "y"), ("rz",)) and cfg.pead.switch_steps == ()
  validate_rl(cfg)
  assert confspec.parse_list_flag("64,abc") == (64, "abc") and confspec.parse_list_flag("x") == ("x",)


def _config_lines(stderr: str) -> list[str]:
  """stderr without MuJoCo's import-time notices (it prints 'Failed to import warp' when warp is absent)."""
  return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Failed to import")]


def test_rl_binary_rejects_a_bad_list_item_in_one_line(tmp_path):
  proc = _run("control_brax.train", "--config=configs/assembly/ppo_square.py", "--config.ppo.hidden=64,abc",
              f"--workdir={tmp_path / 'w'}")
  lines = _config_lines(proc.stderr)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
  assert lines == ["config error: config.ppo.hidden: item 1 'abc' is not an integer; allowed: a list of integers "
                   ">= 1"], proc.stderr
  assert not (tmp_path / "w").exists()


def test_rl_binary_accepts_a_list_override(tmp_path):
  """hidden=32,32 passes validation: the run then stops at the next (deliberately bad) field, a cross-field check
  that runs after every field's own check, so nothing is trained."""
  proc = _run("control_brax.train", "--config=configs/assembly/ppo_square.py", "--config.ppo.hidden=32,32",
              "--config.pead.enabled=true", f"--workdir={tmp_path / 'w'}")
  lines = _config_lines(proc.stderr)
  assert proc.returncode == 2 and len(lines) == 1 and "pead.switch_steps" in lines[0], proc.stderr


def _old_workdir_config() -> dict:
  """A config.json as workdirs saved it before lists were lists (and before LCRL and CS3 existed)."""
  from control_brax.rl.config import base_rl_config

  d = json.loads(json.dumps(base_rl_config("ppo").to_dict()))
  d["env"].update(action_dims="x,y,z,rx,ry,rz", action_groups="")
  for algo in ("ppo", "ddpg"):
    d[algo]["hidden"] = "64,64"
    del d[algo]["lcrl_graph"], d[algo]["lcrl_hidden"]
  d["pead"].update(enabled=True, stages="x,y;z;rx,ry;rz|", switch_steps="30000")
  del d["cs3"]
  return d


def test_old_workdir_configs_with_string_lists_still_load():
  """Old workdirs saved lists as strings ('64,64', 'x,y;z;rx,ry;rz|', '30000'); `from_saved` reads them."""
  from control_brax.rl.config import from_saved

  cfg = from_saved(_old_workdir_config())
  assert cfg.ppo.hidden == (64, 64) and cfg.pead.switch_steps == (30000,)
  assert cfg.pead.stages == ((("x", "y"), ("z",), ("rx", "ry"), ("rz",)), ())
  assert cfg.env.action_dims == ("x", "y", "z", "rx", "ry", "rz") and cfg.env.action_groups == ()
  assert cfg.ppo.lcrl_hidden == () and cfg.cs3.samples == 4096  # fields added since then: their defaults
  old = _old_workdir_config()
  old["ppo"]["hidden"] = "64,abc"
  with pytest.raises(ConfigError, match=r"^config\.ppo\.hidden: item 1 'abc' is not an integer"):
    from_saved(old)


def _committed_rl_workdir_configs() -> list[str]:
  paths = sorted(glob.glob(os.path.join(REPO, "results", "**", "config.json"), recursive=True))
  out = []
  for path in paths:
    with open(path) as f:
      if "env" in json.load(f):  # an RL workdir (pangu_jax workdirs have model/train/...)
        out.append(path)
  return out


@pytest.mark.parametrize("path", _committed_rl_workdir_configs(), ids=lambda p: os.path.relpath(p, REPO))
def test_committed_rl_workdir_configs_load(path):
  """Every committed RL workdir's config.json (old string forms) loads (Bazel's runfiles hold none: no cases)."""
  from control_brax.rl.config import from_saved

  with open(path) as f:
    assert from_saved(json.load(f)).ppo.hidden == (64, 64)


@pytest.mark.parametrize("args, line", [
    (["pangu_jax.info", "--config=configs/pangu/tiny.py", "--nosuchflag"], "flag error: Unknown command line flag"),
    # a default config applies the overrides as the flag is defined (confspec.flag_errors)
    (["experiments.assembly_methods", "--config.no_such=1"], "config error: config.no_such: unknown field"),
])
def test_bad_flag_or_override_is_one_line_exit_2(args, line):
  proc = _run(*args)
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(line), proc.stderr


def test_nan_fails_every_float_field_with_one_line():
  """NaN passes a range check written as comparisons (they are all False), so it is rejected by name."""
  import math  # noqa: PLC0415

  from confspec import ConfigError, Field  # noqa: PLC0415

  for f in (Field(float, 1.0, lo=0, lo_open=True), Field(float, 0.5, hi=1), Field(float, 0.0)):
    with pytest.raises(ConfigError, match=r"^config.x: nan is not a number; allowed: a number"):
      f.check("config.x", math.nan)
  proc = _run("pangu_jax.info", "--config=configs/pangu/tiny.py", "--config.train.learning_rate=nan")
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 2 and lines == ["config error: config.train.learning_rate: nan is not a number; "
                                            "allowed: a number > 0 <= 1"], proc.stderr


@pytest.mark.parametrize("args, line", [
    (["control_brax.evaluate", "--config=configs/assembly/ppo_l_shape.py", "--episodes=0"],
     "config error: --episodes: 0 is out of range; allowed: an integer >= 1"),
    (["control_brax.evaluate", "--config=configs/assembly/ppo_l_shape.py", "--seed_index=5"],
     "config error: --seed_index: 5 is out of range; allowed: 0..0"),
    (["control_brax.evaluate", "--config=configs/assembly/ppo_l_shape.py"], "error: --workdir: no checkpoint under"),
    (["pangu_jax.generate"], "error: --workdir: "),
    (["npu_backend.export", "--out=OUT"], "error: --workdir: "),
])
def test_readers_on_an_empty_workdir_or_bad_counts_are_one_line(tmp_path, args, line):
  """Readers given nothing to read, or an impossible count, say so in one line (exit 2) and create nothing."""
  args = [a.replace("OUT", str(tmp_path / "out")) for a in args] + [f"--workdir={tmp_path / 'wd'}"]
  (tmp_path / "wd").mkdir()
  proc = _run(*args)
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "warp" not in ln.lower()]
  assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(line), proc.stderr
  assert os.listdir(tmp_path / "wd") == []
