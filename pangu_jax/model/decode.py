"""Generation with the KV cache (MLA: compressed; GQA: per head): greedy, sampled, and MTP self-speculative.

Plain generation prefills the prompt, then runs every new token through one
`lax.scan` under a single `jit`.

Self-speculative decoding (batch 1, greedy) drafts one token with the first MTP
module and verifies it with the main model:
  state: the main model has processed s_0..s_{n-1} (cache length n); g is its
  greedy next token; the MTP cache holds positions 0..n-2.
  1. draft:  MTP at position n-1 on (h_{n-1}, g) -> d (its guess for s_{n+1}).
  2. verify: the main model processes [g, d] at positions n, n+1 -> p_n, p_{n+1}.
  3. if argmax p_n == d, both g and d are committed and the next g is argmax
     p_{n+1}; else only g is committed and the next g is argmax p_n. Either way
     the output is exactly the greedy sequence; a rejected draft's cache slot is
     past the valid length and is overwritten later.
  4. the MTP cache is brought up to date for the newly committed positions.
`acceptance_length` is the mean number of tokens committed per verification
(1 to 2); with an untrained MTP head expect about 1.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pangu_jax.model import transformer


def _sample(logits: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
  if temperature <= 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "temperature", "top_k"))
def _generate(params, prompt, key, cfg, max_new, temperature, top_k):
  b, p = prompt.shape
  cache = transformer.init_cache(cfg, b, p + max_new)
  logits, _, cache = transformer.forward_cached(params, prompt, cache, jnp.int32(0), cfg)
  key, sub = jax.random.split(key)
  first = _sample(logits[:, -1], sub, temperature, top_k)

  def step(carry, _):
    tok, cache, pos, key = carry
    logits, _, cache = transformer.forward_cached(params, tok[:, None], cache, pos, cfg)
    key, sub = jax.random.split(key)
    nxt = _sample(logits[:, -1], sub, temperature, top_k)
    return (nxt, cache, pos + 1, key), tok

  (_, _, _, _), toks = jax.lax.scan(step, (first, cache, jnp.int32(p), key), None, length=max_new)
  return jnp.concatenate([prompt, toks.T], axis=1)


def generate(params, prompt, cfg, max_new: int, *, temperature: float = 0.0, top_k: int = 0, seed: int = 0):
  """Returns (B, P + max_new) tokens. temperature 0 = greedy."""
  cfg = _frozen(cfg)
  prompt = jnp.asarray(prompt, jnp.int32)
  return _generate(params, prompt, jax.random.key(seed), cfg, max_new, float(temperature), int(top_k))


def _frozen(cfg):
  """A hashable view of the model config, for static jit arguments."""
  return cfg if isinstance(cfg, ml_collections.FrozenConfigDict) else ml_collections.FrozenConfigDict(cfg)


def speculative_generate(params, prompt, cfg, max_new: int) -> tuple[np.ndarray, dict]:
  """Greedy generation drafted by the MTP head; output identical to `generate(..., temperature=0)`.

  prompt: (1, P). Returns (tokens (1, P + max_new), stats) with stats
  `acceptance_length`, `verify_steps`, `tokens_per_s`.
  """
  cfg = _frozen(cfg)
  if cfg.mtp_depth < 1:
    raise ValueError("speculative decoding needs config.model.mtp_depth >= 1 (the MTP head drafts)")
  prompt = np.asarray(prompt, np.int32)
  if prompt.shape[0] != 1:
    raise ValueError(f"speculative decoding takes one prompt (batch 1), got batch {prompt.shape[0]}")
  fwd = jax.jit(transformer.forward_cached, static_argnames="cfg")
  mtp = jax.jit(transformer.mtp_cached, static_argnames="cfg")
  t0 = time.perf_counter()
  p = prompt.shape[1]
  cache = transformer.init_cache(cfg, 1, p + max_new + 2)
  logits, hidden, cache = fwd(params, jnp.asarray(prompt), cache, jnp.int32(0), cfg=cfg)
  g = int(jnp.argmax(logits[0, -1]))
  # MTP positions 0..p-2 see (h_i, s_{i+1}); position p-1 (h_{p-1}, g) is the first draft.
  mtp_in_h = hidden
  mtp_in_tok = np.concatenate([prompt[:, 1:], [[g]]], axis=1)
  mtp_start = 0
  out = list(prompt[0]) + [g]
  n = p  # main-cache length; g is committed but not yet processed
  steps = 0
  while len(out) - p < max_new:
    mlogits, cache = mtp(params, mtp_in_h, jnp.asarray(mtp_in_tok, jnp.int32), cache, jnp.int32(mtp_start), cfg=cfg)
    d = int(jnp.argmax(mlogits[0, -1]))
    logits, hidden, cache = fwd(params, jnp.asarray([[g, d]], jnp.int32), cache, jnp.int32(n), cfg=cfg)
    steps += 1
    pred = np.asarray(jnp.argmax(logits[0], axis=-1))
    if pred[0] == d:  # draft accepted: g, d committed; next greedy token from position n+1
      g_next = int(pred[1])
      out += [d, g_next]
      mtp_in_h, mtp_in_tok, mtp_start = hidden, np.array([[d, g_next]]), n
      n += 2
    else:
      g_next = int(pred[0])
      out += [g_next]
      mtp_in_h, mtp_in_tok, mtp_start = hidden[:, :1], np.array([[g_next]]), n
      n += 1
    g = g_next
  elapsed = time.perf_counter() - t0
  toks = np.asarray(out[: p + max_new], np.int32)[None]
  committed = len(out) - p - 1  # tokens committed by verification steps (the first g came from prefill)
  stats = {
      "acceptance_length": committed / max(steps, 1),
      "verify_steps": steps,
      "tokens_per_s": max_new / elapsed,
  }
  return toks, stats
