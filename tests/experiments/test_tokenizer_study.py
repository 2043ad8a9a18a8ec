"""The byte-vs-BPE study's smoke version: both runs, the same held-out documents, a finite bits-per-byte figure each,
the report and plot written."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_tokenizer_study_smoke(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.tokenizer_study", f"--out={tmp_path}", "--steps=4",
                         "--bpe_vocab=300", "--micro"], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = {r["tokenizer"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])["runs"]}
  assert set(runs) == {"byte", "bpe"} and runs["bpe"]["vocab_size"] == 300
  # a byte token is one byte (a character cut at a window edge decodes to a 3-byte replacement character)
  assert abs(runs["byte"]["bytes_per_token"] - 1.0) < 2e-3 and runs["bpe"]["bytes_per_token"] > 1.2  # 44 merges
  for r in runs.values():
    assert 0 < r["bits_per_byte"] < 16 and r["train_tokens_seen"] == runs["byte"]["train_tokens_seen"]
  # whole windows of the same validation documents: the two cover nearly the same bytes
  assert abs(runs["bpe"]["val_bytes"] - runs["byte"]["val_bytes"]) < 0.05 * runs["byte"]["val_bytes"]
  for f in ("results.json", "report.md", "bits_per_byte.png"):
    assert os.path.exists(tmp_path / f)
