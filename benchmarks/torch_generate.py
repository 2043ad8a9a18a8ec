"""The torch-side generator (npu_backend.generate's decoder graphs) against JAX's jit'd decoder, on this CPU.

Tiny preset, fresh weights, batch 1, fp32: prefill tokens/s (a --prompt_len prompt: the chunk graph, --chunk
tokens per call) and decode tokens/s (--new tokens, one step graph call each, greedy) of the exported decoder,
eager and (--compile) through torch.compile (inductor on CPU), against JAX: `forward_cached` jit'd on the whole
prompt, and `pangu_jax.model.decode.generate` (prefill + a lax.scan of decode steps under one jit) minus that
prefill. Greedy tokens are compared first (they must be equal). Both in the same run, best of --repeats.
Last line: JSON with torch_decode_tokens_per_s, jax_decode_tokens_per_s, decode_ratio, torch_prefill_tokens_per_s,
jax_prefill_tokens_per_s, prefill_ratio (torch / JAX), the compiled figures and compile_s when --compile,
export_s, tokens_equal.
Usage: python benchmarks/torch_generate.py [--prompt_len=64] [--new=64] [--chunk=16] [--repeats=3] [--compile]
"""

from __future__ import annotations

import json
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import flags  # noqa: E402
from timing import best_time  # noqa: E402

import confspec  # noqa: E402
from npu_backend.decoder import TorchDecoder  # noqa: E402
from npu_backend.export.decode import export_decoder  # noqa: E402
from pangu_jax.model import decode, transformer  # noqa: E402
from pangu_jax.presets import load_preset  # noqa: E402


def torch_figures(dec, prompt, new, repeats):
  """(prefill tokens/s, decode tokens/s, tokens) of a decoder, best of `repeats`."""
  best_pre, best_dec, toks = 0.0, 0.0, None
  for _ in range(repeats):
    toks, st = dec.generate(prompt, new)
    best_pre, best_dec = max(best_pre, st["prefill_tokens_per_s"]), max(best_dec, st["tokens_per_s"])
  return best_pre, best_dec, toks


def main(argv):
  del argv
  torch.set_num_threads(os.cpu_count() or 1)
  cfg = load_preset("tiny").model
  params = transformer.init_params(jax.random.key(0), cfg)
  p, n = _PROMPT.value, _NEW.value
  prompt = [int(t) for t in np.asarray(jax.random.randint(jax.random.key(1), (p,), 0, cfg.vocab_size))]
  out = tempfile.mkdtemp(prefix="torch_generate_")
  t0 = time.perf_counter()
  export_decoder(cfg, params, out, max_len=p + n, chunk=_CHUNK.value)
  export_s = time.perf_counter() - t0
  print(f"export: {export_s:.2f}s", flush=True)
  res = {"export_s": export_s, "prompt_len": p, "new_tokens": n, "chunk": _CHUNK.value}

  # JAX: jit'd prefill on the whole prompt, and the whole generation (prefill + scan) under one jit
  cache = transformer.init_cache(cfg, 1, p + n)
  fwd = jax.jit(lambda prm, t, c: transformer.forward_cached(prm, t, c, jnp.int32(0), cfg)[0])
  toks_j = jnp.asarray([prompt], jnp.int32)
  t_pre_j = best_time(lambda: jax.block_until_ready(fwd(params, toks_j, cache)), _REPEATS.value)
  want = np.asarray(decode.generate(params, toks_j, cfg, n))[0].tolist()
  t_all_j = best_time(lambda: jax.block_until_ready(decode.generate(params, toks_j, cfg, n)), _REPEATS.value)
  res["jax_prefill_tokens_per_s"] = p / t_pre_j
  res["jax_decode_tokens_per_s"] = n / max(t_all_j - t_pre_j, 1e-9)

  dec = TorchDecoder(out)
  pre, dtps, toks = torch_figures(dec, prompt, n, _REPEATS.value)
  res.update(torch_prefill_tokens_per_s=pre, torch_decode_tokens_per_s=dtps, tokens_equal=toks == want)
  res["prefill_ratio"] = pre / res["jax_prefill_tokens_per_s"]
  res["decode_ratio"] = dtps / res["jax_decode_tokens_per_s"]
  print(f"eager torch: prefill {pre:.0f} tokens/s, decode {dtps:.1f} tokens/s; JAX: prefill "
        f"{res['jax_prefill_tokens_per_s']:.0f}, decode {res['jax_decode_tokens_per_s']:.1f}; tokens equal "
        f"{res['tokens_equal']}", flush=True)
  if _COMPILE.value:
    cdec = TorchDecoder(out, compile=True)
    t1 = time.perf_counter()
    cdec.generate(prompt, 2)  # first calls compile the chunk and the step graphs
    res["compile_s"] = time.perf_counter() - t1
    cpre, cdtps, ctoks = torch_figures(cdec, prompt, n, _REPEATS.value)
    res.update(compiled_prefill_tokens_per_s=cpre, compiled_decode_tokens_per_s=cdtps,
               compiled_tokens_equal=ctoks == want, compiled_prefill_ratio=cpre / res["jax_prefill_tokens_per_s"],
               compiled_decode_ratio=cdtps / res["jax_decode_tokens_per_s"])
    print(f"compiled torch ({res['compile_s']:.0f}s to compile): prefill {cpre:.0f} tokens/s, decode {cdtps:.1f} "
          f"tokens/s", flush=True)
  print(json.dumps(res))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _PROMPT = flags.DEFINE_integer("prompt_len", 64, "Prompt tokens.", lower_bound=1)
  _NEW = flags.DEFINE_integer("new", 64, "Generated tokens.", lower_bound=2)
  _CHUNK = flags.DEFINE_integer("chunk", 16, "Prefill chunk of the exported decoder.", lower_bound=1)
  _REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (best of).", lower_bound=1)
  _COMPILE = flags.DEFINE_bool("compile", False, "Also time the torch.compile'd decoder (inductor).")
  confspec.run(main)
