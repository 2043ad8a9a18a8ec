"""Tokenisers. The default is byte-level: token = UTF-8 byte (vocab 256), nothing to train or download."""

from __future__ import annotations

import numpy as np


class ByteTokenizer:
  vocab_size = 256

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

  def decode(self, tokens) -> str:
    arr = np.asarray(tokens, dtype=np.int64)
    return bytes(int(t) for t in arr if 0 <= t < 256).decode("utf-8", errors="replace")
