"""`python -m npu_backend.generate --export=DIR --prompt=S`: generate text with the exported decoder, torch only.

    python -m npu_backend.generate --export=DIR --prompt="The " [--max_tokens=64] [--temperature=0]
        [--top_k=0] [--top_p=1] [--seed=0] [--device=auto|cpu|cuda|npu] [--compile] [--json]

Reads DIR/decode/ (the prefill-chunk and decode-step graphs `python -m npu_backend.export` writes) and the
tokenizer saved with the export (DIR/tokenizer/tokenizer.json; bytes when the model was trained on bytes), and
streams the generated text to stdout as tokens are chosen. Imports no JAX (tested): torch, safetensors,
tokenizers. `--device=npu` on a machine without an NPU falls back with one line (npu_backend.device);
`--compile` runs the graphs through torch.compile (inductor; on an NPU the backend torch_npu registers).
With --json the last line is one JSON object: `text`, `tokens`, `tokens_per_s` (decode), `prefill_s`,
`prefill_tokens_per_s`, `backend`, `compile` (`text` and `tokens`: the generated ones, as pangu_jax.generate's JSON).
Sampling: see npu_backend/decoder.py.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

import confspec


def load_export_tokenizer(export_dir: str):
  """The tokenizer saved with an export: DIR/tokenizer/tokenizer.json, else bytes if the model was trained on them."""
  from pangu_jax.tokenizer import WORKDIR_TOKENIZER, ByteTokenizer, load_tokenizer  # noqa: PLC0415 (no JAX)

  path = os.path.join(export_dir, WORKDIR_TOKENIZER)
  if os.path.exists(path):
    return load_tokenizer(path, "--export")
  try:
    with open(os.path.join(export_dir, "export.json")) as f:
      data = json.load(f)["config"]["data"]
  except (OSError, ValueError, KeyError):
    data = {"tokenizer": "byte"}
  if data.get("tokenizer", "byte") != "byte":
    raise confspec.ConfigError(f"--export: {export_dir} has no tokenizer/tokenizer.json but its model was trained "
                               "with a BPE; re-export from the training workdir (its tokenizer is copied)")
  return ByteTokenizer()


def main(argv):
  del argv
  from npu_backend.decoder import TorchDecoder  # noqa: PLC0415
  from npu_backend.device import select_device  # noqa: PLC0415

  choice = select_device(_DEVICE.value)
  tok = load_export_tokenizer(_EXPORT.value)
  if _DEVICE.value not in ("auto", choice.device):
    print(f"--device={_DEVICE.value}: not available ({choice.reason})", file=sys.stderr)
  dec = TorchDecoder(_EXPORT.value, device=choice.tensor_device, compile=_COMPILE.value)
  if tok.vocab_size > dec.meta["vocab_size"]:
    raise confspec.ConfigError(f"--export: the tokenizer has {tok.vocab_size} tokens, the model "
                               f"{dec.meta['vocab_size']}")
  prompt = [int(t) for t in tok.encode(_PROMPT.value)]
  new = []
  shown = ""

  def stream(t):
    nonlocal shown
    new.append(t)
    text = tok.decode(new)
    if not text.endswith("\ufffd"):  # a multi-byte character not yet complete: wait for its last byte
      sys.stdout.write(text[len(shown):])
      sys.stdout.flush()
      shown = text

  out, stats = dec.generate(prompt, _MAX_TOKENS.value, temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
                            top_p=_TOP_P.value, seed=_SEED.value, on_token=stream)
  text = tok.decode(out[len(prompt):])
  sys.stdout.write(text[len(shown):] + "\n")
  print(f"{stats['tokens_per_s']:.1f} tokens/s decode, prefill {len(prompt)} tokens in {stats['prefill_s']:.3f}s "
        f"on {choice.device} ({choice.reason})", file=sys.stderr)
  if _JSON.value:
    print(json.dumps({"text": text, "tokens": out[len(prompt):], "prompt_tokens": len(prompt),
                      "tokens_per_s": stats["tokens_per_s"], "prefill_s": stats["prefill_s"],
                      "prefill_tokens_per_s": stats["prefill_tokens_per_s"], "backend": choice.device,
                      "backend_reason": choice.reason, "compile": _COMPILE.value, "tokenizer": tok.name,
                      "jax_imported": "jax" in sys.modules}))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _EXPORT = flags.DEFINE_string("export", None, "Export directory (python -m npu_backend.export --out=DIR).")
  _PROMPT = flags.DEFINE_string("prompt", "The ", "Prompt text.")
  _MAX_TOKENS = flags.DEFINE_integer("max_tokens", 64, "Tokens to generate.", lower_bound=1)
  _TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy.", lower_bound=0.0)
  _TOP_K = flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens (0 = all).", lower_bound=0)
  _TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = all).", lower_bound=0.0, upper_bound=1.0)
  _SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
  _DEVICE = flags.DEFINE_enum("device", "auto", ["auto", "npu", "cuda", "cpu"], "Torch device.")
  _COMPILE = flags.DEFINE_bool("compile", False, "torch.compile the decoder graphs.")
  _JSON = flags.DEFINE_bool("json", False, "Print one JSON object as the last line.")
  flags.mark_flags_as_required(["export"])
  confspec.run(main)
