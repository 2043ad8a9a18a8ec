"""Generation on the torch side, without JAX: the exported decoder graphs, a sampler, plain and streamed decoding.

`TorchDecoder(export_dir, device)` loads `export_dir/decode/` (written by `npu_backend.export`, see
`npu_backend.export.decode` for the graphs' contract) and keeps the cache as torch tensors on the device.
`forward(tokens, start)` runs any number of new tokens (chunk graph calls, then step calls) and returns the last
position's logits; `generate(prompt_ids, max_new, ...)` prefills and decodes, calling `on_token(id)` as each
token is chosen (streaming).

Sampler (our definitions, the JAX sampler's `pangu_jax.model.decode._sample` where it has the option):
temperature 0 is greedy (argmax, ties to the lowest id like jnp.argmax); otherwise logits / temperature, then
top-k (keep logits >= the k-th largest, as the JAX sampler does), then top-p (nucleus: the smallest set of most
likely tokens whose probability reaches p, the token crossing p included; ties kept in id order), and a
categorical draw from torch's generator seeded by `seed`. The draws are not JAX's random numbers, so sampled
text differs from `pangu_jax.generate`'s; the distribution at the same logits is the same (tested).
"""

from __future__ import annotations

import json
import os
import time

import torch

from confspec import ConfigError
from npu_backend.runtime import graph as rt

DECODE_DIR = "decode"


def read_decode_meta(export_dir: str) -> dict:
  path = os.path.join(export_dir, DECODE_DIR, "decode.json")
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise rt.ExportError(f"{path}: no decoder graphs here ({type(e).__name__}); export with "
                         "`python -m npu_backend.export --decode`") from None
  if meta.get("format") != "npu_backend.decode/1":
    raise rt.ExportError(f"{path}: not an npu_backend decoder export (format {meta.get('format')!r})")
  return meta


def sample_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
  """The sampling distribution over the vocabulary (float64) at one position's logits (V,)."""
  x = logits.double() / temperature
  if top_k > 0:
    kth = torch.topk(x, min(top_k, x.numel())).values[-1]
    x = torch.where(x < kth, torch.full_like(x, -torch.inf), x)
  p = torch.softmax(x, dim=-1)
  if top_p < 1.0:
    order = torch.sort(p, descending=True, stable=True).indices
    cum = torch.cumsum(p[order], dim=0)
    keep_sorted = (cum - p[order]) < top_p  # every token before which the mass is still below p
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    p = torch.where(keep, p, torch.zeros_like(p))
    p = p / p.sum()
  return p


def choose(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator) -> int:
  if temperature <= 0:
    return int(torch.argmax(logits))
  return int(torch.multinomial(sample_probs(logits, temperature, top_k, top_p), 1, generator=generator))


class TorchDecoder:
  """The exported decoder on one torch device; the cache lives in `self.cache`."""

  def __init__(self, export_dir: str, device: str = "cpu", compile: bool = False, lowering=None):
    self.meta = read_decode_meta(export_dir)
    self.device = device
    root = os.path.join(export_dir, DECODE_DIR)
    self.graphs = {name: rt.load(os.path.join(root, name), lowering=lowering, device=device)
                   for name in ("chunk", "step")}
    if compile:
      self.graphs = {k: torch.compile(g, dynamic=False) for k, g in self.graphs.items()}
    self.batch, self.max_len, self.chunk = self.meta["batch"], self.meta["max_len"], self.meta["chunk"]
    self.reset()

  def reset(self) -> None:
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    self.cache = [torch.zeros(x["shape"], dtype=dt[x["dtype"]], device=self.device) for x in self.meta["cache"]]

  def check_range(self, start: int, n: int, what: str = "tokens") -> None:
    if start + n > self.max_len:
      raise ConfigError(f"{what}: positions {start}..{start + n - 1} exceed the exported cache; allowed: "
                        f"positions < {self.max_len} (re-export with a larger --decode_max_len)")

  def _call(self, name: str, tokens: torch.Tensor, start: int):
    out = self.graphs[name](tokens, torch.tensor(start, dtype=torch.int32, device=self.device), *self.cache)
    self.cache = list(out[2:])
    return out[0], out[1]

  def forward(self, tokens, start: int):
    """New tokens (B, S) at positions start..start+S-1: (logits (B, S, V), hidden (B, S, d))."""
    tokens = torch.as_tensor(tokens, dtype=torch.int32).to(self.device)
    if tokens.ndim != 2 or tokens.shape[0] != self.batch:
      raise ConfigError(f"tokens: shape {tuple(tokens.shape)}; allowed: ({self.batch}, S) (the exported batch)")
    s = tokens.shape[1]
    self.check_range(start, s)
    logits, hidden, pos = [], [], start
    while s - (pos - start) >= self.chunk:
      lg, h = self._call("chunk", tokens[:, pos - start:pos - start + self.chunk], pos)
      logits.append(lg)
      hidden.append(h)
      pos += self.chunk
    while pos - start < s:
      lg, h = self._call("step", tokens[:, pos - start:pos - start + 1], pos)
      logits.append(lg)
      hidden.append(h)
      pos += 1
    return torch.cat(logits, dim=1), torch.cat(hidden, dim=1)

  @torch.no_grad()
  def generate(self, prompt_ids: list, max_new: int, *, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int = 0, on_token=None) -> tuple[list, dict]:
    """Prompt (a list of ids, batch 1) + `max_new` chosen tokens, and timing stats."""
    if self.batch != 1:
      raise ConfigError(f"generate: the decoder was exported for batch {self.batch}; allowed: batch 1")
    if not prompt_ids:
      raise ConfigError("--prompt: empty after tokenisation; allowed: at least one token")
    self.check_range(0, len(prompt_ids) + max_new, "--max_tokens")
    gen = torch.Generator().manual_seed(seed)
    self.reset()
    t0 = time.perf_counter()
    logits, _ = self.forward([prompt_ids], 0)
    prefill_s = time.perf_counter() - t0
    out = list(prompt_ids)
    pos = len(prompt_ids)
    t1 = time.perf_counter()
    nxt = choose(logits[0, -1].float().cpu(), temperature, top_k, top_p, gen)
    for i in range(max_new):
      out.append(nxt)
      if on_token is not None:
        on_token(nxt)
      if i == max_new - 1:
        break
      logits, _ = self._call("step", torch.tensor([[nxt]], dtype=torch.int32, device=self.device), pos)
      pos += 1
      nxt = choose(logits[0, -1].float().cpu(), temperature, top_k, top_p, gen)
    decode_s = time.perf_counter() - t1
    return out, {"prefill_s": prefill_s, "prefill_tokens_per_s": len(prompt_ids) / max(prefill_s, 1e-9),
                 "decode_s": decode_s, "tokens_per_s": max_new / max(decode_s, 1e-9)}
