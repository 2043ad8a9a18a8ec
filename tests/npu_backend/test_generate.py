"""The torch-side generator: decoder graphs with the KV cache against JAX's decoder, the sampler against JAX's
sampler, the binary without JAX, and the one-line shape errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import REPO

from confspec import ConfigError
from npu_backend.decoder import TorchDecoder, sample_probs
from npu_backend.export.model import export_to_dir
from npu_backend.runtime import ExportError, load
from pangu_jax.config import base_config
from pangu_jax.model import decode, transformer

PROMPT_TEXT = "Hello, wor!"  # 11 byte tokens: two chunks of 4, then three single steps
PROMPT = list(PROMPT_TEXT.encode())
NEW = 12


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
  """The tiny preset (fresh TinyInit weights, MLA + MoE + MTP), exported with decoder graphs (chunk 4, 40 positions)."""
  cfg = base_config()
  params = transformer.init_params(jax.random.key(3), cfg.model)
  out = str(tmp_path_factory.mktemp("export"))
  export_to_dir(cfg, params, out, 1, 8, hf=False, decode_max_len=40, decode_chunk=4)
  want = np.asarray(decode.generate(params, np.asarray([PROMPT], np.int32), cfg.model, NEW))[0].tolist()
  return cfg, params, out, want


def test_torch_greedy_equals_jax_greedy_and_the_cache_matches(tiny_export):
  """fp32 greedy tokens of the exported decoder = pangu_jax's jit'd cached decoder, on a prompt that takes both
  graphs; the prefill's last logits and the cache it leaves equal JAX's forward_cached on the whole prompt."""
  cfg, params, out, want = tiny_export
  dec = TorchDecoder(out)
  got, stats = dec.generate(PROMPT, NEW)
  assert got == want
  assert stats["tokens_per_s"] > 0 and stats["prefill_s"] > 0
  dec.reset()
  with torch.no_grad():
    logits, _ = dec.forward([PROMPT], 0)
  cache = transformer.init_cache(cfg.model, 1, 40)
  jl, _, jc = transformer.forward_cached(params, jnp.asarray([PROMPT], jnp.int32), cache, jnp.int32(0), cfg.model)
  np.testing.assert_allclose(logits.numpy(), np.asarray(jl), rtol=2e-5, atol=2e-5)
  for t, j in zip(dec.cache, jax.tree.leaves(jc)):
    np.testing.assert_allclose(t.numpy(), np.asarray(j), rtol=2e-5, atol=2e-5)


def test_sampler_distribution_equals_jax_samplers():
  """At fixed logits: torch's sampling distribution = the empirical distribution of pangu_jax's sampler (20k
  draws, chi-square), for temperature and top-k; torch's own draws follow it; top-p keeps the smallest set
  reaching p (closed form)."""
  from scipy.stats import chisquare  # noqa: PLC0415

  logits = np.asarray([2.0, 1.0, 0.5, 0.0, -1.0, 1.5, -0.5, 0.25], np.float32)
  n = 20000
  for temperature, top_k in ((1.0, 0), (0.7, 3), (1.5, 5)):
    keys = jax.random.split(jax.random.key(0), n)
    draws = np.asarray(jax.vmap(lambda k, t=temperature, kk=top_k: decode._sample(jnp.asarray(logits), k, t, kk))(keys))
    p = sample_probs(torch.from_numpy(logits), temperature, top_k).numpy()
    support = p > 0
    counts = np.bincount(draws, minlength=len(logits))
    assert np.all(counts[~support] == 0)
    assert chisquare(counts[support], p[support] * n).pvalue > 1e-3, (temperature, top_k)
    g = torch.Generator().manual_seed(1)
    tdraws = torch.multinomial(torch.from_numpy(p), n, replacement=True, generator=g).numpy()
    assert chisquare(np.bincount(tdraws, minlength=len(logits))[support], p[support] * n).pvalue > 1e-3
  probs = np.log(np.asarray([0.5, 0.3, 0.15, 0.05]))
  np.testing.assert_allclose(sample_probs(torch.from_numpy(probs), 1.0, 0, 0.7).numpy(), [0.625, 0.375, 0, 0],
                             atol=1e-12)
  np.testing.assert_allclose(sample_probs(torch.from_numpy(probs), 1.0, 0, 0.85).numpy()[:3],
                             np.asarray([0.5, 0.3, 0.15]) / 0.95, atol=1e-12)


def test_generator_binary_runs_without_jax(tiny_export, tmp_path):
  """`python -m npu_backend.generate` in a process where `import jax` fails: greedy tokens as JAX's, the text
  decoded by the export's tokenizer (bytes), streamed to stdout; --device=npu without an NPU falls back in one
  line; a prompt longer than the cache is one line, exit 2."""
  _, _, out, want = tiny_export
  blocker = tmp_path / "nojax" / "jax"
  blocker.mkdir(parents=True)
  (blocker / "__init__.py").write_text("raise ImportError('jax is blocked in this test')\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker.parent), REPO]))
  run = lambda *a: subprocess.run([sys.executable, "-m", "npu_backend.generate", f"--export={out}", *a], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=300)
  proc = run(f"--prompt={PROMPT_TEXT}", f"--max_tokens={NEW}", "--json", "--device=npu")
  assert proc.returncode == 0, proc.stderr[-2000:]
  res = json.loads(proc.stdout.strip().splitlines()[-1])
  new = want[len(PROMPT):]
  assert res["tokens"] == new and res["jax_imported"] is False and res["backend"] == "cpu"
  assert res["text"] == bytes(new).decode("utf-8", errors="replace")
  assert res["tokens_per_s"] > 0 and res["prefill_s"] > 0
  assert "--device=npu: not available" in proc.stderr
  long = run("--prompt=" + "x" * 39, "--max_tokens=4")
  assert long.returncode == 2 and "exceed the exported cache" in long.stderr, long.stderr[-2000:]
  assert "Traceback" not in long.stderr and len(long.stderr.strip().splitlines()) == 1


def test_static_graphs_name_the_wrong_dimension(tiny_export):
  """The forward graph at another sequence length, and the decoder at another batch: one line each."""
  out = tiny_export[2]
  module = load(out)
  with pytest.raises(ExportError, match=r"input 0 has shape \(1, 16\) but the graph was exported for \(1, 8\): "
                                        r"dimension 1 must be 8"):
    module(torch.zeros((1, 16), dtype=torch.int32))
  dec = TorchDecoder(out)
  with pytest.raises(ConfigError, match=r"tokens: shape \(2, 3\); allowed: \(1, S\)"):
    dec.forward(torch.zeros((2, 3), dtype=torch.int32), 0)
  with pytest.raises(ConfigError, match="positions 38..41 exceed the exported cache; allowed: positions < 40"):
    dec.forward(torch.zeros((1, 4), dtype=torch.int32), 38)
