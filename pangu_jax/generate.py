"""`python -m pangu_jax.generate (--workdir=D | --config=F) --prompt=S [--max_tokens=N] [--speculative] [--json]`.

Greedy (default) or sampled (`--temperature>0`) generation with the compressed
KV cache, or MTP self-speculative decoding (`--speculative`, greedy, identical
output). Weights come from the latest checkpoint in --workdir, or are freshly
initialised from --config.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

import confspec
from confspec import ConfigError
from pangu_jax import workdir as workdir_lib
from pangu_jax.model import decode
from pangu_jax.tokenizer import ByteTokenizer, check_vocab, load_tokenizer, workdir_tokenizer


def load_model(config, workdir):
  """(cfg, params, tokenizer) from a workdir's latest checkpoint and its tokenizer (`<workdir>/tokenizer/`, else
  bytes), or fresh weights from a config (its `data.tokenizer_path`, else bytes)."""
  cfg, params = workdir_lib.load_model(config, workdir)
  if workdir:
    tok = workdir_tokenizer(workdir)
  elif cfg.data.tokenizer == "bpe" and cfg.data.tokenizer_path:
    tok = load_tokenizer(cfg.data.tokenizer_path)
  else:
    tok = ByteTokenizer()
  check_vocab(tok, cfg.model.vocab_size)
  return cfg, params, tok


def main(argv):
  del argv
  cfg, params, tok = load_model(_CONFIG.value, _WORKDIR.value)
  prompt = tok.encode(_PROMPT.value)[None]
  if prompt.shape[1] == 0:
    raise ConfigError("--prompt: must not be empty")
  acceptance = None
  if _WARMUP.value:  # compile every shape the timed run will use
    if _SPECULATIVE.value and _TEMPERATURE.value == 0:
      decode.speculative_generate(params, prompt, cfg.model, _MAX_TOKENS.value)
    elif not _SPECULATIVE.value:
      jax.block_until_ready(decode.generate(params, prompt, cfg.model, _MAX_TOKENS.value,
                                            temperature=_TEMPERATURE.value, top_k=_TOP_K.value, seed=_SEED.value))
  if _SPECULATIVE.value:
    if _TEMPERATURE.value > 0:
      raise ConfigError("--temperature: speculative decoding is greedy; allowed: 0 with --speculative")
    out, stats = decode.speculative_generate(params, prompt, cfg.model, _MAX_TOKENS.value)
    tps, acceptance = stats["tokens_per_s"], stats["acceptance_length"]
  else:
    t0 = time.perf_counter()
    out = decode.generate(params, prompt, cfg.model, _MAX_TOKENS.value, temperature=_TEMPERATURE.value,
                          top_k=_TOP_K.value, seed=_SEED.value)
    out = np.asarray(jax.block_until_ready(out))
    tps = _MAX_TOKENS.value / (time.perf_counter() - t0)
  text = tok.decode(out[0, prompt.shape[1]:])
  print(_PROMPT.value + text)
  if _JSON.value:
    print(json.dumps({"text": text, "tokens_per_s": tps, "acceptance_length": acceptance,
                      "tokens": [int(t) for t in out[0, prompt.shape[1]:]], "tokenizer": tok.name}))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Pangu config file (fresh weights).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir: use its latest checkpoint and config.")
  _PROMPT = flags.DEFINE_string("prompt", "The ", "Prompt text.")
  _MAX_TOKENS = flags.DEFINE_integer("max_tokens", 64, "Tokens to generate.", lower_bound=1)
  _SPECULATIVE = flags.DEFINE_bool("speculative", False, "Self-speculative decoding with the MTP head.")
  _TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy.", lower_bound=0.0)
  _TOP_K = flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens (0 = all).", lower_bound=0)
  _SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
  _JSON = flags.DEFINE_bool("json", False, "Print one JSON object as the last line.")
  _WARMUP = flags.DEFINE_bool("warmup", True, "Generate once before timing, so tokens_per_s excludes compilation.")
  confspec.run(main)
