"""runkit: atomic writes, config files by path, JSON lines, flat checkpoints, seed statistics."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from confspec import ConfigError
from runkit.atomic import atomic_path, atomic_write, atomic_write_json
from runkit.checkpoint import Checkpointer
from runkit.configfile import load_config_file
from runkit.metrics import read_jsonl
from runkit.stats import mean_ci, median_ci, paired_binary_change_ci


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
  path = tmp_path / "a.json"
  atomic_write_json(str(path), {"x": 1})
  assert json.loads(path.read_text()) == {"x": 1}
  with pytest.raises(RuntimeError), atomic_path(str(path)) as tmp:
    with open(tmp, "w") as f:
      f.write('{"x": 2, "trunc')
    raise RuntimeError("killed mid-write")
  assert json.loads(path.read_text()) == {"x": 1}  # the old file, untouched
  assert os.listdir(tmp_path) == ["a.json"]  # and no temporary file left behind
  atomic_write(str(tmp_path / "sub" / "b.bin"), b"\x00\x01")
  assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("body, expect", [
    (None, "config file not found"),
    ("def get_config(:\n  pass\n", "line 1: syntax error"),
    ("x = 1\n", "has no get_config() function"),
    ("import math\n\ndef get_config():\n  return 1 / 0\n", "line 4: ZeroDivisionError"),
    ("import no_such_module_here\n", "line 1: ModuleNotFoundError"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, body, expect):
  path = tmp_path / "cfg.py"
  if body is not None:
    path.write_text(body)
  with pytest.raises(ConfigError) as e:
    load_config_file(str(path), what="--config")
  msg = str(e.value)
  assert expect in msg and "\n" not in msg and msg.startswith("--config: ")


def test_config_file_get_config_result(tmp_path):
  path = tmp_path / "ok.py"
  path.write_text("import ml_collections\n\ndef get_config():\n  return ml_collections.ConfigDict({'a': 3})\n")
  assert load_config_file(str(path)).a == 3


def test_read_jsonl_skips_cut_and_plain_lines(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1}\nprogress 50%\n{"step": 2}\n{"step": 3, "lo')
  assert read_jsonl(str(path)) == [{"step": 1}, {"step": 2}]
  assert read_jsonl(str(tmp_path / "none.jsonl"), missing_ok=True) == []


def test_flat_checkpoint_round_trip_with_empty_leaves(tmp_path):
  """`flat=True` stores a state with zero-size leaves (orbax refuses them) and restores it uncommitted."""
  state = {"a": jnp.arange(6.0).reshape(2, 3), "empty": jnp.zeros((0, 4)), "n": jnp.asarray(7, jnp.int32)}
  ckpt = Checkpointer(str(tmp_path / "ck"), keep=2, async_save=False, flat=True)
  assert ckpt.save(5, state, {"stage": 1})
  step, got, meta = ckpt.restore_latest(jax.eval_shape(lambda: state))
  ckpt.close()
  assert step == 5 and meta["stage"] == 1
  np.testing.assert_array_equal(got["a"], state["a"])
  assert got["empty"].shape == (0, 4) and int(got["n"]) == 7
  assert not got["a"].committed  # jit keys compiled programs on committedness: a restore must not recompile


def test_mean_ci_matches_the_normal_interval_for_many_seeds():
  rng = np.random.default_rng(1)
  v = rng.normal(2.0, 1.0, 400)
  r = mean_ci(list(v) + [None])
  half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
  assert r["n"] == 400 and r["mean"] == pytest.approx(v.mean())
  np.testing.assert_allclose(r["ci95"], [v.mean() - half, v.mean() + half], rtol=0.02)


def test_median_ci_censored_upper_bound_and_degenerate_samples():
  r = median_ci([10.0, 20.0, 30.0, 40.0, None])
  assert r["median"] == 30.0 and r["ci95"][1] is None and r["ci95"][0] >= 10.0
  assert median_ci([5.0]) == {"median": 5.0, "ci95": [5.0, 5.0], "reached": 1, "n": 1}


def test_read_only_checkpointer_creates_moves_and_deletes_nothing(tmp_path):
  missing = tmp_path / "none" / "checkpoints"
  ro = Checkpointer(str(missing), keep=2, read_only=True)
  assert ro.steps() == [] and ro.restore_latest({"a": jnp.zeros(2)}) is None
  ro.close()
  assert not (tmp_path / "none").exists()
  state = {"a": jnp.arange(50_000.0)}
  ckpt = Checkpointer(str(tmp_path / "ck"), keep=3, async_save=False)
  ckpt.save(1, state, {})
  ckpt.save(2, {"a": state["a"] + 1}, {})
  ckpt.close()
  victim = max((p for p in (tmp_path / "ck" / "2").rglob("*") if p.is_file() and "/d/" in str(p)),
               key=lambda p: p.stat().st_size)
  victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
  lines = []
  ro = Checkpointer(str(tmp_path / "ck"), keep=3, read_only=True, log=lines.append)
  step, got, _ = ro.restore_latest(jax.eval_shape(lambda: state))
  ro.close()
  assert step == 1 and len(lines) == 1 and "skipped" in lines[0]
  assert (tmp_path / "ck" / "2").exists() and not (tmp_path / "ck.quarantine").exists()


def test_structure_mismatch_raises_and_names_the_leaf(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "ck"), keep=2, async_save=False)
  ckpt.save(1, {"w": jnp.zeros((4, 8))}, {})
  with pytest.raises(ConfigError, match=r"\['w'\] is float32\(4, 8\) in the checkpoint, float32\(4, 16\) now"):
    ckpt.restore_latest({"w": jax.ShapeDtypeStruct((4, 16), jnp.float32)})
  again = Checkpointer(str(tmp_path / "ck"), keep=2, read_only=True)
  assert again.steps() == [1]  # nothing deleted or moved
  again.close()


def test_success_change_interval_matches_per_episode_differences():
  """The interval from discordant counts equals the normal interval of the per-episode +1 / -1 / 0 differences."""
  won, lost, n = 75, 19, 4000
  d = np.concatenate([np.ones(won), -np.ones(lost), np.zeros(n - won - lost)])
  half = 1.96 * d.std() / np.sqrt(n)
  np.testing.assert_allclose(paired_binary_change_ci(won, lost, n), [d.mean() - half, d.mean() + half], rtol=1e-12)


def test_median_ci_censoring():
  from runkit.stats import median_ci  # noqa: PLC0415

  r = median_ci([1.0, 2.0, 3.0])
  assert r["median"] == 2.0 and 1.0 <= r["ci95"][0] <= 2.0 <= r["ci95"][1] <= 3.0
  r = median_ci([1.0, None, None])
  assert r["median"] is None and r["ci95"][1] is None and r["reached"] == 1
  r = median_ci([1.0, 2.0, None])
  assert r["median"] == 2.0 and r["ci95"][1] is None


def test_bootstrap_interval_contains_mean_and_shrinks():
  from runkit.stats import mean_ci as bootstrap_ci

  rng = np.random.default_rng(0)
  small = bootstrap_ci(rng.normal(1.0, 1.0, 5))
  large = bootstrap_ci(rng.normal(1.0, 1.0, 500))
  assert small["ci95"][0] <= small["mean"] <= small["ci95"][1]
  assert (large["ci95"][1] - large["ci95"][0]) < (small["ci95"][1] - small["ci95"][0])
  assert abs(large["mean"] - 1.0) < 0.2
  assert bootstrap_ci([None, None])["mean"] is None


def test_workdir_lock_is_exclusive_names_its_holder_and_dies_with_it(tmp_path):
  """A second trainer on a held workdir stops with one line naming the holder; a kill -9 frees the lock."""
  import signal  # noqa: PLC0415
  import subprocess  # noqa: PLC0415
  import sys  # noqa: PLC0415

  from conftest import REPO  # noqa: PLC0415

  from runkit.lock import WorkdirLock  # noqa: PLC0415

  holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from runkit.lock import WorkdirLock; "
                             f"WorkdirLock({str(tmp_path)!r}, 'holder').acquire(); print('held', flush=True); "
                             "time.sleep(60)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  proc = subprocess.run([sys.executable, "-m", "pangu_jax.train", "--config=configs/pangu/tiny.py",
                         f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
  err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 2 and len(err) == 1, proc.stderr
  assert "in use by another run" in err[0] and f"pid {holder.pid}" in err[0] and "holder" in err[0]
  assert sorted(os.listdir(tmp_path)) == [".lock"]  # the rejected trainer wrote nothing
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with WorkdirLock(str(tmp_path)):  # nothing stuck after the kill
    pass
