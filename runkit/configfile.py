"""`get_config()` of a Python config file given by path, as absl's `config_flags` loads `--config=FILE`.

Config files (`configs/**/*.py`, peg geometries, hardware files) are Python modules with a `get_config()`
function. Loading one for library use, notebooks or tests goes through `load_config_file`, which turns every
way a file can be wrong into one `ConfigError` line naming the file: missing, not a `.py` file, a syntax or
import error inside it (with its line number), or no `get_config`.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from confspec import ConfigError


def load_config_file(path: str, what: str = "--config"):
  """The result of `get_config()` in the Python file at `path`. `what` names the flag or field in errors.

  As with absl's `--config=FILE:ARG`, a `:ARG` suffix is passed to `get_config(ARG)`."""
  arg = None
  if not os.path.isfile(path) and ":" in path and os.path.isfile(path.rsplit(":", 1)[0]):
    path, arg = path.rsplit(":", 1)
  if not os.path.isfile(path):
    raise ConfigError(f"{what}: config file not found: {path}")
  name = "_config_" + os.path.splitext(os.path.basename(path))[0] + f"_{abs(hash(os.path.abspath(path)))}"
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"{what}: {path} is not a Python config file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
      raise ConfigError(f"{what}: {path} has no get_config() function")
    return get_config() if arg is None else get_config(arg)
  except ConfigError:
    raise
  except SyntaxError as e:
    raise ConfigError(f"{what}: {path} line {e.lineno}: syntax error: {e.msg}") from None
  except Exception as e:  # noqa: BLE001 (anything the file raises while loading is the file's problem)
    raise ConfigError(f"{what}: {path}{_line_in(e, path)}: {type(e).__name__}: {e}") from None
  finally:
    sys.modules.pop(name, None)


def _line_in(err: BaseException, path: str) -> str:
  """' line N' of the innermost traceback frame inside `path`, or ''."""
  tb, line = err.__traceback__, None
  while tb is not None:
    if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
      line = tb.tb_lineno
    tb = tb.tb_next
  return f" line {line}" if line else ""
