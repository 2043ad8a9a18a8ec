"""Shared test setup: CPU only, quiet logs, small model configs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Headless rendering; must precede the first `import mujoco` (brax imports it).
os.environ.setdefault("MUJOCO_GL", "egl")
# The suite is compile-bound (tiny shapes, many distinct programs: the MJX rollouts compile for a minute and run
# for seconds), so XLA's CPU backend compiles without LLVM optimisation: ~40% less CPU time on the parity and
# trainer tests, identical pass/fail. Subprocesses (binaries, multi-device bodies, notebook kernels) inherit it.
# Tests compare two paths computed under the same flag, never against absolute speed. TEST_XLA_OPT=1 opts out.
if os.environ.get("TEST_XLA_OPT", "0") != "1" and "xla_backend_optimization_level" not in os.environ.get(
    "XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# One persistent XLA compilation cache for the whole run, shared by the xdist workers and every subprocess they
# start (binaries, multi-device bodies, notebook kernels): many tests compile the same programs (the tiny trainer
# in the resume, demo and notebook tests; the same MJX rollouts in several RL tests), and the second compile is a
# read. Measured on the tiny trainer run twice: 31.2 s -> 17.6 s CPU. The directory is made by the first process
# that imports this file (the xdist controller), inherited through the environment, and removed at its exit.
# Eviction is on so that jax serialises reads and writes with a file lock. TEST_JAX_CACHE=0 turns it off;
# TEST_JAX_CACHE_DIR=D keeps one across runs.
_OWN_CACHE = None
if os.environ.get("TEST_JAX_CACHE", "1") != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # noqa: E402

  _OWN_CACHE = os.environ.get("TEST_JAX_CACHE_DIR") or tempfile.mkdtemp(prefix="jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(16 << 30))
  if not os.environ.get("TEST_JAX_CACHE_DIR"):
    import atexit  # noqa: E402
    import shutil  # noqa: E402

    atexit.register(shutil.rmtree, _OWN_CACHE, True)

import pytest  # noqa: E402

from pangu_jax.config import base_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def full_opt_env() -> dict:
  """os.environ without the suite's -O0 flag: for subprocesses whose time goes into running, not compiling,
  long MJX rollouts (at -O0 the quick demo took 824 s against 250 s) or timings compared with predictions."""
  import re  # noqa: PLC0415

  env = dict(os.environ)
  env["XLA_FLAGS"] = re.sub(r"--xla_backend_optimization_level=\S+", "", env.get("XLA_FLAGS", "")).strip()
  return env


def small_model_cfg(**overrides):
  """A model config small enough to compile in seconds, with every feature on."""
  m = base_config().model
  m.update(
      num_layers=3, num_dense_layers=1, hidden_size=32, num_heads=2, q_lora_rank=16, kv_lora_rank=16,
      qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, num_routed_experts=4, num_shared_experts=1, top_k=2,
      expert_ffn_dim=16, dense_ffn_dim=32, vocab_size=64, mtp_depth=1, max_seq_len=64,
  )
  m.update(overrides)
  return m


@pytest.fixture
def repo():
  return REPO


def pytest_collection_modifyitems(config, items):
  """Tests marked slow run first (stable order otherwise). With `make test`'s `--maxschedchunk=1`, pytest-xdist
  hands the next test from the front of this list to whichever worker is free, so the long tests start early on
  every worker and the short ones fill the gaps at the end, instead of a ten-minute test starting last and
  running alone (longest-first scheduling). Without it, xdist would give each worker a contiguous chunk of the
  list up front and one worker would get all the slow tests."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
