"""Where training documents come from: the embedded corpus, text files, JSON lines, Parquet, or a Hugging Face
`datasets` directory written by `save_to_disk`; each streamed one document at a time (a corpus larger than memory
is never held whole).

Our definitions: a document is one text file (a file, or each `*.txt/.md/.rst/.py` under a directory, sorted by
path), one JSON lines record, or one row of a Parquet file / of a `save_to_disk` dataset (its Arrow files in the
order `state.json` lists them); the text of a record or row is its `data.text_field` (default `text`).
`data.format = "auto"` picks by the path: a directory with `state.json` or `dataset_info.json` is `hf_disk`,
`*.jsonl` / `*.json` is `jsonl`, `*.parquet` is `parquet`, anything else is text. Parquet and `save_to_disk`
directories need pyarrow (`pip install -e '.[data]'`), imported only when used.

Every mistake is one line (`ConfigError`): a path that does not exist, an unknown format, a JSON lines line that
is not JSON (its line number), a record without the text field, no documents.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

from confspec import ConfigError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
FORMATS = ("auto", "text", "jsonl", "parquet", "hf_disk")


def embedded_documents() -> list[str]:
  import pydoc_data.topics  # noqa: PLC0415 (stdlib; imported lazily)

  return [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]


def detect_format(path: str, fmt: str = "auto") -> str:
  if fmt not in FORMATS:
    raise ConfigError(f"config.data.format: {fmt!r} is not a known format; allowed: {', '.join(FORMATS)}")
  if fmt != "auto":
    return fmt
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, "state.json")) or os.path.exists(os.path.join(path, "dataset_info.json")):
      return "hf_disk"
    return "text"
  low = path.lower()
  if low.endswith((".jsonl", ".json")):
    return "jsonl"
  if low.endswith(".parquet"):
    return "parquet"
  return "text"


def input_files(data_cfg) -> list[str]:
  """The files a corpus reads (for the content hash); [] for the embedded corpus."""
  path = data_cfg.path
  if not path:
    return []
  if not os.path.exists(path):
    raise ConfigError(f"config.data.path: {path!r} does not exist; allowed: a file, a directory, or '' (embedded)")
  fmt = detect_format(path, data_cfg.format)
  if fmt == "hf_disk":
    return _arrow_files(path)
  if os.path.isfile(path):
    return [path]
  if fmt != "text":
    raise ConfigError(f"config.data.path: {path!r} is a directory; format {fmt} needs a file")
  files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(TEXT_SUFFIXES))
  if not files:
    raise ConfigError(f"config.data.path: no {'/'.join(TEXT_SUFFIXES)} files under {path!r}")
  return files


def iter_documents(data_cfg) -> Iterator[str]:
  """The corpus's documents in order (see the module docstring)."""
  if not data_cfg.path:
    yield from embedded_documents()
    return
  files = input_files(data_cfg)
  fmt = detect_format(data_cfg.path, data_cfg.format)
  field = data_cfg.text_field
  if fmt == "text":
    for f in files:
      with open(f, encoding="utf-8", errors="replace") as fh:
        yield fh.read()
  elif fmt == "jsonl":
    yield from _jsonl(files[0], field)
  elif fmt == "parquet":
    yield from _parquet(files[0], field)
  else:
    yield from _arrow(files, field, data_cfg.path)


def _jsonl(path: str, field: str) -> Iterator[str]:
  with open(path, encoding="utf-8", errors="replace") as fh:
    for n, line in enumerate(fh, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ConfigError(f"config.data.path: {path} line {n} is not JSON ({e.msg})") from None
      if not isinstance(rec, dict) or field not in rec:
        raise ConfigError(f"config.data.path: {path} line {n} has no field {field!r} (config.data.text_field)")
      if not isinstance(rec[field], str):
        raise ConfigError(f"config.data.path: {path} line {n}: field {field!r} is not a string")
      yield rec[field]


def _pyarrow(what: str):
  try:
    import pyarrow  # noqa: PLC0415, F401
  except ImportError:
    raise ConfigError(f"config.data.path: reading {what} needs pyarrow; install it with pip install -e '.[data]'") \
        from None
  import pyarrow  # noqa: PLC0415

  return pyarrow


def _column(batch, field: str, where: str) -> list:
  if field not in batch.schema.names:
    raise ConfigError(f"config.data.path: {where} has no column {field!r} (config.data.text_field); columns: "
                      f"{', '.join(batch.schema.names)}")
  return batch.column(field).to_pylist()


def _parquet(path: str, field: str) -> Iterator[str]:
  _pyarrow("Parquet")
  import pyarrow.parquet as pq  # noqa: PLC0415

  try:
    f = pq.ParquetFile(path)
  except Exception as e:  # pyarrow raises ArrowInvalid and friends for a file that is not Parquet
    raise ConfigError(f"config.data.path: {path} is not a Parquet file ({str(e).splitlines()[0]})") from None
  for batch in f.iter_batches(batch_size=1024):
    for text in _column(batch, field, path):
      yield "" if text is None else str(text)


def _arrow_files(path: str) -> list[str]:
  state = os.path.join(path, "state.json")
  if os.path.exists(state):
    try:
      with open(state) as fh:
        files = [os.path.join(path, d["filename"]) for d in json.load(fh)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ConfigError(f"config.data.path: {state} is not a datasets state file ({e})") from None
  else:
    files = sorted(glob.glob(os.path.join(path, "*.arrow")))
  if not files:
    raise ConfigError(f"config.data.path: no Arrow files in the datasets directory {path!r}")
  for f in files:
    if not os.path.exists(f):
      raise ConfigError(f"config.data.path: {path} names {os.path.basename(f)}, which is missing")
  return files


def _arrow(files: list[str], field: str, path: str) -> Iterator[str]:
  pa = _pyarrow("a save_to_disk directory")
  for f in files:
    try:
      reader = pa.ipc.open_stream(pa.memory_map(f))
    except Exception as e:  # not an Arrow stream
      raise ConfigError(f"config.data.path: {f} is not an Arrow file ({str(e).splitlines()[0]})") from None
    for batch in reader:
      for text in _column(batch, field, f):
        yield "" if text is None else str(text)
