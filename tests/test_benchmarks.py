"""Benchmark scripts run end to end at small sizes and print their JSON contract as the last line."""

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
@pytest.mark.parametrize("script, args, keys", [
    ("moe_layer.py", ["--tokens=256", "--repeats=1"],
     {"jax_dropless_tokens_per_s", "jax_capacity_tokens_per_s", "torch_loop_tokens_per_s", "speedup_vs_torch_loop",
      "fraction_of_matmul_peak"}),
    ("export.py", ["--batch=1", "--seq_len=16", "--repeats=1"],
     {"export_s", "torch_tokens_per_s", "jax_tokens_per_s", "ratio", "max_rel_err"}),
    ("memory.py", ["--layers=2", "--seq_len=32", "--batch=4", "--repeats=1"],
     {"policies", "fine_peak_mb", "none_peak_mb", "fine_step_s", "full_step_s", "fine_memory_ratio_vs_none",
      "fine_time_ratio_vs_full"}),
    ("data_pipeline.py", ["--presets=tiny", "--repeats=1", "--steps=20", "--copies=1"],
     {"tiny", "min_ratio"}),
    ("hf_import_memory.py", ["--hidden=64", "--layers=2", "--experts=4", "--ffn=64", "--vocab=512", "--shards=3"],
     {"ours_peak_increment_mb", "transformers_peak_increment_mb", "ratio_ours_vs_transformers", "shards",
      "largest_shard_mb", "ours_minus_params_in_shards"}),
    ("torch_generate.py", ["--prompt_len=8", "--new=4", "--chunk=4", "--repeats=1"],
     {"torch_decode_tokens_per_s", "jax_decode_tokens_per_s", "decode_ratio", "torch_prefill_tokens_per_s",
      "jax_prefill_tokens_per_s", "prefill_ratio", "tokens_equal"}),
])
def test_benchmark_smoke(script, args, keys):
  proc = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert keys <= set(out)
  if "tokens_equal" in out:
    assert out["tokens_equal"]  # the torch decoder's greedy tokens are JAX's
  if "max_rel_err" in out:
    assert out["max_rel_err"] < 1e-5
  if "forward_rel_l2_vs_torch" in out:
    assert out["forward_rel_l2_vs_torch"] < 1e-5  # the competitor computes the same function
