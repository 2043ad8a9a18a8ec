"""Config schemas and validation shared by every binary in the repository.

Every binary loads an `ml_collections` config file through absl `config_flags`
(`--config=FILE`, overrides as `--config.a.b=v`) and then calls `validate`
against its package's schema. Validation happens once, up front, and a bad value
produces exactly one line that names the field and the allowed range, so that a
typo costs seconds instead of a traceback from deep inside XLA twenty minutes
into a run.

A schema is a nested dict: section name -> dict, field name -> `Field`.

How a binary is written (every `python -m ...` module and every benchmarks/*.py script; tests/test_build.py checks
it). Its flags are typed holders (`flags.DEFINE_*` / `config_flags.DEFINE_*` return a `FlagHolder`; read
`_NAME.value`, never `flags.FLAGS.name`) defined inside the `__main__` guard, so that importing the module as a
library (tests, other modules) defines no flags and any number of binaries import side by side without absl's
DuplicateFlagError. `main(argv)` is a module-level function that reads the holders; the guard ends in
`confspec.run(main)`, which turns a bad flag, `--config.a.b=v` override or config value into one line on stderr and
exit code 2. A config flag with a default config (`DEFINE_config_dict`, `DEFINE_config_file` with a default path)
applies the overrides as it is defined, so it is defined inside `with confspec.flag_errors():`, which gives the same
one-line errors. Common flags are spelt the same everywhere: `--config`, `--workdir`, `--out`, `--json`, `--seed`,
`--progress` (`--noprogress` turns the bars off).

    def main(argv):
      del argv
      print(json.dumps(train(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)))


    if __name__ == "__main__":
      _CONFIG = config_flags.DEFINE_config_file("config", None, "RL config file (configs/assembly/*.py).")
      _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; re-run to resume.")
      _PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars on stderr.")
      flags.mark_flags_as_required(["config", "workdir"])
      confspec.run(main)
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

__all__ = ["ConfigError", "Field", "validate", "exit_on_error", "flag_errors", "run", "to_dict"]


class ConfigError(ValueError):
  """A config value is unknown, of the wrong type or out of range (one line)."""


_KIND_NAMES = {bool: "a bool", int: "an integer", float: "a number", str: "a string"}


@dataclasses.dataclass(frozen=True)
class Field:
  """Type and allowed range of one config field.

  Attributes:
    kind: bool, int, float or str. An int is accepted where float is asked.
    lo, hi: inclusive bounds for numbers (None = unbounded).
    choices: the allowed values, for enumerations.
    lo_open: if True the lower bound is exclusive (e.g. a learning rate > 0).
    doc: one-line meaning, shown by `describe`.
  """

  kind: type
  lo: float | None = None
  hi: float | None = None
  choices: tuple[Any, ...] | None = None
  lo_open: bool = False
  doc: str = ""

  def allowed(self) -> str:
    if self.choices is not None:
      return "one of " + ", ".join(repr(c) for c in self.choices)
    parts = [_KIND_NAMES.get(self.kind, self.kind.__name__)]
    if self.lo is not None:
      parts.append(("> " if self.lo_open else ">= ") + _fmt(self.lo))
    if self.hi is not None:
      parts.append("<= " + _fmt(self.hi))
    return " ".join(parts)

  def check(self, path: str, value: Any) -> None:
    ok_type = (isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool)))
    if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
      ok_type = True
    if not ok_type:
      raise ConfigError(f"{path}: {value!r} is not {_KIND_NAMES.get(self.kind, self.kind)}; allowed: {self.allowed()}")
    if self.choices is not None and value not in self.choices:
      raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {self.allowed()}")
    if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
      raise ConfigError(f"{path}: {value!r} is out of range; allowed: {self.allowed()}")
    if self.hi is not None and value > self.hi:
      raise ConfigError(f"{path}: {value!r} is out of range; allowed: {self.allowed()}")


def _fmt(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else repr(x)


def to_dict(config: Any) -> dict:
  """A plain nested dict of a ConfigDict (or mapping)."""
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  return dict(config)


def validate(
    config: Any,
    schema: Mapping[str, Any],
    checks: Sequence[Callable[[Any], None]] = (),
    root: str = "config",
) -> Any:
  """Checks `config` against `schema`, then runs cross-field `checks`.

  Every field in the schema must be present, every present field must be in the
  schema, and every value must be of the right type and in range. Each check in
  `checks` takes the config and raises ConfigError for a cross-field violation
  (e.g. num_dense_layers > num_layers).

  Returns the config unchanged so calls can be chained.
  Raises:
    ConfigError: with one line naming the first offending field.
  """
  _walk(to_dict(config), schema, root)
  for check in checks:
    check(config)
  return config


def _walk(values: Mapping[str, Any], schema: Mapping[str, Any], path: str) -> None:
  for key in values:
    if key not in schema:
      raise ConfigError(f"{path}.{key}: unknown field; allowed fields of {path}: {', '.join(sorted(schema))}")
  for key, spec in schema.items():
    sub = f"{path}.{key}"
    if key not in values:
      raise ConfigError(f"{sub}: missing field; allowed: {_describe(spec)}")
    if isinstance(spec, Field):
      spec.check(sub, values[key])
    else:
      if not isinstance(values[key], Mapping):
        raise ConfigError(f"{sub}: must be a section with fields {', '.join(sorted(spec))}")
      _walk(values[key], spec, sub)


def _describe(spec: Any) -> str:
  return spec.allowed() if isinstance(spec, Field) else "a section"


def exit_on_error(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Decorator for absl `main`s: a ConfigError exits with its one line, code 2."""

  def wrapped(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except ConfigError as e:
      print(f"config error: {e}", file=sys.stderr)
      sys.exit(2)

  wrapped.__name__ = getattr(fn, "__name__", "main")
  wrapped.__doc__ = fn.__doc__
  return wrapped


def _override_error(argv: Sequence[str], err: Exception) -> str:
  """One line for a failed `--config.a.b=v` override (ml_collections raises a bare KeyError/AttributeError)."""
  key = str(err).strip("\"'")
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      path = arg[2:].split("=", 1)[0]
      if key and key in path.split("."):
        return f"{path}: unknown field (from {arg})"
  return f"config override failed: {err}"


def _one_line(argv: Sequence[str], err: Exception) -> str:
  """The stderr line for an error raised while absl parses the command line."""
  from absl import flags  # noqa: PLC0415

  if isinstance(err, flags.Error):
    return f"flag error: {err}"
  if isinstance(err, ConfigError):
    return f"config error: {err}"
  return f"config error: {_override_error(argv, err)}"


_PARSE_ERRORS = (KeyError, AttributeError, ConfigError)


@contextlib.contextmanager
def flag_errors():
  """One-line errors (exit code 2) while flags are defined: a config flag with a default config (`DEFINE_config_dict`,
  or `DEFINE_config_file` with a default path) applies the `--config.a.b=v` overrides as it is defined, before
  `run` parses anything."""
  from absl import flags  # noqa: PLC0415

  try:
    yield
  except (flags.Error, *_PARSE_ERRORS) as e:
    print(_one_line(sys.argv, e), file=sys.stderr)
    sys.exit(2)


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run` with one-line errors for bad flags, config overrides and config values (exit code 2)."""
  from absl import app, flags  # noqa: PLC0415

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except (flags.Error, *_PARSE_ERRORS) as e:
      print(_one_line(argv, e), file=sys.stderr)
    sys.exit(2)

  def quiet_main(argv):
    from absl import logging  # noqa: PLC0415

    if logging.get_verbosity() == logging.INFO:  # unless --verbosity asked otherwise: no library INFO spam
      logging.set_verbosity(logging.WARNING)
    return exit_on_error(main)(argv)

  app.run(quiet_main, flags_parser=parse)
