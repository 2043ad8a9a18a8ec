"""Config declarations, defaults and validation shared by every binary in the repository.

Every binary loads an `ml_collections` config file through absl `config_flags`
(`--config=FILE`, overrides as `--config.a.b=v`) and then calls `validate`
against its package's schema. Validation happens once, up front, and a bad value
produces exactly one line that names the field and the allowed range, so that a
typo costs seconds instead of a traceback from deep inside XLA twenty minutes
into a run.

Our definitions:

* A *schema* is a nested dict: section name -> dict, field name -> `Field`. It is
  also the declaration of the defaults: each field is declared once, with its
  kind, default, range and meaning together, and `defaults(schema)` builds the
  `ml_collections.ConfigDict` every config file starts from. A field declared
  without a default (`REQUIRED`) must be set by whoever builds the config.
* A *list field* has kind `tuple` and an `item` (a kind, or a `Field` for nested
  lists); `lo`, `hi`, `choices` then constrain each item. The config holds a
  tuple (a list, as JSON gives back, is accepted too). A bad item is named by its
  index: `config.ppo.hidden: item 1 'abc' is not an integer; allowed: ...`, and
  for nested lists by the dotted index path (`item 0.1` = item 1 of item 0).
* On the command line a list is `--config.ppo.hidden=64,64` (or a Python literal,
  `--config.ppo.hidden='(64, 64)'`, which nested lists need:
  `--config.env.action_groups="(('x', 'y'), ('z',), ('rx', 'ry'), ('rz',))"`);
  an empty value is the empty list. `run` installs that parser.

How a binary is written (every `python -m ...` module and every benchmarks/*.py script; tests/test_build.py checks
it). Its flags are typed holders (`flags.DEFINE_*` / `config_flags.DEFINE_*` return a `FlagHolder`; read
`_NAME.value`, never `flags.FLAGS.name`) defined inside the `__main__` guard, so that importing the module as a
library (tests, other modules) defines no flags and any number of binaries import side by side without absl's
DuplicateFlagError. `main(argv)` is a module-level function that reads the holders; the guard ends in
`confspec.run(main)`, which turns a bad flag, `--config.a.b=v` override or config value into one line on stderr and
exit code 2. A config flag with a default config (`DEFINE_config_dict`, `DEFINE_config_file` with a default path)
applies the overrides as it is defined, so it is defined inside `with confspec.flag_errors():`, which gives the same
one-line errors. Common flags are spelt the same everywhere: `--config`, `--workdir`, `--out`, `--json`, `--seed`,
`--progress` (`--noprogress` turns the bars off). The shortest complete example is the end of
`pangu_jax/info.py`; `control_brax/train.py` and `pangu_jax/train/__main__.py` are the trainers' versions.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

__all__ = ["ConfigError", "RunError", "Field", "REQUIRED", "defaults", "validate", "exit_on_error", "flag_errors",
           "run", "to_dict", "parse_list_flag", "install_flag_parsers", "load_config_file"]


class ConfigError(ValueError):
  """A config value is unknown, of the wrong type or out of range (one line)."""


class RunError(RuntimeError):
  """The run cannot start as asked although its config is valid (e.g. another run holds the workdir): one line."""


class _Required:
  """The default of a field that has none: the config must set it."""

  def __repr__(self) -> str:
    return "REQUIRED"


REQUIRED = _Required()

_KIND_NAMES = {bool: "a bool", int: "an integer", float: "a number", str: "a string", tuple: "a list"}
_KIND_PLURALS = {bool: "bools", int: "integers", float: "numbers", str: "strings", tuple: "lists"}


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field: kind, default, allowed range and meaning, declared together.

  Attributes:
    kind: bool, int, float, str, or tuple (a list field; `list` means the same). An int is accepted where
      float is asked.
    default: the value `defaults` puts in the config (a list field's default as a tuple); REQUIRED = none.
    lo, hi: inclusive bounds for numbers (None = unbounded); for a list field, bounds of each item.
    choices: the allowed values, for enumerations (for a list field, of each item).
    lo_open: if True the lower bound is exclusive (e.g. a learning rate > 0).
    item: list fields only: each item's kind (with lo/hi/choices above) or a `Field` (nested lists).
    length: list fields only: the exact number of items (None = any).
    min_len: list fields only: the least number of items.
    unique: list fields only: no item may repeat.
    doc: one-line meaning.
  """

  kind: type
  default: Any = REQUIRED
  lo: float | None = None
  hi: float | None = None
  choices: tuple[Any, ...] | None = None
  lo_open: bool = False
  item: Any = None
  length: int | None = None
  min_len: int = 0
  unique: bool = False
  doc: str = ""

  def __post_init__(self):
    if self.kind is list:  # the same list field: the config holds tuples (what config_flags overrides as a list)
      object.__setattr__(self, "kind", tuple)
    if (self.kind is tuple) != (self.item is not None):
      raise TypeError("Field: a list field needs kind=tuple and an `item`; other kinds take no `item`")
    if self.kind is tuple and isinstance(self.item, Field) and (self.lo, self.hi, self.choices) != (None,) * 3:
      raise TypeError("Field: with item=Field(...), put lo/hi/choices on the item")
    if self.default is not REQUIRED:
      object.__setattr__(self, "default", self.coerce(self.default))

  def coerce(self, value: Any) -> Any:
    """`value` in the form the config holds: lists as tuples, an int of a float field as a float (ConfigDict
    keeps a field's type, so a float field must start as a float)."""
    if self.kind is tuple and isinstance(value, (list, tuple)):
      item = self.item_field()
      return tuple(item.coerce(v) for v in value)
    if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
      return float(value)
    return value

  def item_field(self) -> Field:
    """The Field each item of a list field must satisfy."""
    if isinstance(self.item, Field):
      return self.item
    return Field(self.item, lo=self.lo, hi=self.hi, choices=self.choices, lo_open=self.lo_open)

  def allowed(self) -> str:
    if self.kind is tuple:
      return "a " + self._list_words()
    if self.choices is not None:
      return "one of " + ", ".join(repr(c) for c in self.choices)
    return " ".join([_KIND_NAMES.get(self.kind, self.kind.__name__), *self._range_words()])

  def _range_words(self) -> list[str]:
    parts = []
    if self.lo is not None:
      parts.append(("> " if self.lo_open else ">= ") + _fmt(self.lo))
    if self.hi is not None:
      parts.append("<= " + _fmt(self.hi))
    return parts

  def _list_words(self) -> str:
    """'list of 6 numbers > 0', 'non-empty list of distinct values from 'x', 'y''."""
    size = "non-empty " if self.min_len == 1 and self.length is None else ""
    count = f"{self.length} " if self.length is not None else ""
    at_least = f" (at least {self.min_len})" if self.min_len > 1 else ""
    distinct = "distinct " if self.unique else ""
    return f"{size}list of {count}{distinct}{self.item_field()._plural()}{at_least}"

  def _plural(self) -> str:
    if self.kind is tuple:
      return self._list_words().replace("list of", "lists of", 1)
    if self.choices is not None:
      return "values from " + ", ".join(repr(c) for c in self.choices)
    return " ".join([_KIND_PLURALS.get(self.kind, self.kind.__name__), *self._range_words()])

  def problem(self, value: Any) -> tuple[list[int], str] | None:
    """None if `value` is allowed, else (index path into a list, what is wrong with the value there)."""
    if self.kind is tuple:
      return self._list_problem(value)
    ok_type = isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))
    if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
      ok_type = True
    if not ok_type:
      return [], f"{value!r} is not {_KIND_NAMES.get(self.kind, self.kind)}"
    if isinstance(value, float) and value != value:  # NaN: every range comparison with it is False
      return [], "nan is not a number"
    if self.choices is not None and value not in self.choices:
      return [], f"{value!r} is not allowed"
    if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
      return [], f"{value!r} is out of range"
    if self.hi is not None and value > self.hi:
      return [], f"{value!r} is out of range"
    return None

  def _list_problem(self, value: Any) -> tuple[list[int], str] | None:
    if isinstance(value, str):
      example = f" (e.g. {_py(self.default)})" if self.default not in (REQUIRED, ()) else ""
      return [], f"{value!r} is a string, not a list{example}"
    if not isinstance(value, (list, tuple)):
      return [], f"{value!r} is not a list"
    if (self.length is not None and len(value) != self.length) or len(value) < self.min_len:
      return [], f"{_py(value)} has {len(value)} item{'' if len(value) == 1 else 's'}"
    item = self.item_field()
    for i, v in enumerate(value):
      got = item.problem(v)
      if got is not None:
        return [i, *got[0]], got[1]
      if self.unique and v in value[:i]:
        return [i], f"{_py(v)} repeats an earlier item"
    return None

  def check(self, path: str, value: Any) -> None:
    """Raises ConfigError (one line naming `path` and the allowed values) unless `value` is allowed."""
    got = self.problem(value)
    if got is None:
      return
    where, what = got
    at = f"item {'.'.join(map(str, where))} " if where else ""
    raise ConfigError(f"{path}: {at}{what}; allowed: {self.allowed()}")


def _fmt(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else repr(x)


def _as_tuples(v: Any) -> Any:
  return tuple(_as_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def _py(v: Any) -> str:
  """A list value as the user would write it (tuples, JSON lists alike)."""
  return repr(_as_tuples(v))


def to_dict(config: Any) -> dict:
  """A plain nested dict of a ConfigDict (or mapping)."""
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  return dict(config)


def defaults(schema: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The ConfigDict of every declared default in `schema` (fields without one are left out).

  `overrides` maps dotted paths ('train.total_env_steps') to values that replace
  the declared default, for configs whose defaults depend on a choice (e.g. the
  RL algorithm); each must name a declared field and is checked against it.
  Raises:
    ConfigError: an override names no field, or a value is not allowed.
  """
  out = _defaults(schema, "config")
  for path, value in (overrides or {}).items():
    *parents, key = path.split(".")
    spec, section = schema, out
    for p in parents:
      if not isinstance(spec.get(p), Mapping):
        raise ConfigError(f"config.{path}: unknown field")
      spec, section = spec[p], section[p]
    if not isinstance(spec.get(key), Field):
      raise ConfigError(f"config.{path}: unknown field")
    spec[key].check(f"config.{path}", value)
    section[key] = spec[key].coerce(value)
  return out


def _defaults(schema: Mapping[str, Any], path: str) -> ml_collections.ConfigDict:
  out = {}
  for key, spec in schema.items():
    if isinstance(spec, Field):
      if spec.default is not REQUIRED:
        spec.check(f"{path}.{key}", spec.default)  # a declaration whose default breaks its own range is a bug
        out[key] = spec.default
    else:
      out[key] = _defaults(spec, f"{path}.{key}")
  return ml_collections.ConfigDict(out)


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
  """Decorator for absl `main`s: a ConfigError or RunError exits with its one line, code 2."""

  def wrapped(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except ConfigError as e:
      print(f"config error: {e}", file=sys.stderr)
      sys.exit(2)
    except RunError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  wrapped.__name__ = getattr(fn, "__name__", "main")
  wrapped.__doc__ = fn.__doc__
  return wrapped


def _override_error(argv: Sequence[str], err: Exception) -> str:
  """One line for a failed `--config.a.b=v` override (ml_collections raises a bare KeyError/AttributeError)."""
  # A KeyError's str() is the repr of its message ("'hidden_sizee'\nDid you mean ..." with literal \n and quotes):
  # read the message itself, its first line the key, a second line ml_collections' suggestion.
  while err.args and isinstance(err.args[0], BaseException):  # ml_collections: AttributeError(KeyError(message))
    err = err.args[0]
  text = str(err.args[0]) if err.args else str(err)
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  quoted = re.match(r"""^(?:Key )?["']([^"']+)["']""", lines[0]) if lines else None
  key = quoted.group(1) if quoted else (lines[0].strip("\"'") if lines else "")
  hint = next((ln for ln in lines[1:] if ln.startswith("Did you mean")), "")
  hint = "; " + hint[0].lower() + hint[1:].replace(f' instead of "{key}"', "") if hint else ""
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      path = arg[2:].split("=", 1)[0]
      if key and key in path.split("."):
        return f"{path}: unknown field (from {arg}){hint}"
  return f"config override failed: {' '.join(lines)}"


def _literal_or_text(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_list_flag(argument: Any) -> tuple:
  """The tuple a `--config.a.b=...` list override means: '64,64' -> (64, 64), 'x,y' -> ('x', 'y'),
  '64,abc' -> (64, 'abc') (validation then names the bad item), '' -> (), a Python literal -> itself."""
  if isinstance(argument, tuple):
    return argument
  if isinstance(argument, list):
    return tuple(argument)
  if argument is None:
    return ()
  if not isinstance(argument, str):
    return (argument,)
  text = argument.strip()
  if not text:
    return ()
  value = _literal_or_text(text)
  if isinstance(value, (tuple, list)):
    return tuple(value)
  if value is not text:
    return (value,)
  return tuple(_literal_or_text(p.strip()) for p in text.split(",") if p.strip())


def install_flag_parsers() -> None:
  """Makes `config_flags` parse every list (tuple-valued) field's override with `parse_list_flag`, and load every
  `DEFINE_config_file` file through `load_config_file` (a missing file, a syntax error in it, no `get_config`:
  one line, exit 2; config_flags itself defers a missing file to a traceback at first use and lets a syntax error
  escape as one)."""
  from ml_collections.config_flags import config_flags, tuple_parser  # noqa: PLC0415

  class ListParser(tuple_parser.TupleParser):  # a TupleParser: config_flags then treats the flag as a list flag
    def parse(self, argument):
      return parse_list_flag(argument)

  config_flags.register_flag_parser_for_type(tuple, ListParser())
  parser = config_flags.ConfigFileFlagParser
  if not getattr(parser.parse, "confspec", False):

    def parse(self, path):
      config = load_config_file(path, what=f"--{self.name}")
      if config is None:
        raise ConfigError(f"--{self.name}: get_config() in {path} returned None (a missing return statement?)")
      if self._lock_config:
        config_flags._LockConfig(config)  # noqa: SLF001 (what the parser it replaces does)
      return config

    parse.confspec = True
    parser.parse = parse


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


def _one_line(argv: Sequence[str], err: Exception) -> str:
  """The stderr line for an error raised while absl parses the command line."""
  from absl import flags  # noqa: PLC0415

  if isinstance(err, flags.Error):
    if isinstance(err.__context__, ConfigError):  # raised by a flag's parser (a config file): absl wrapped it
      return f"config error: {err.__context__}"
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

  install_flag_parsers()  # list fields' overrides are parsed as the flag is defined, too
  try:
    yield
  except (flags.Error, *_PARSE_ERRORS) as e:
    print(_one_line(sys.argv, e), file=sys.stderr)
    sys.exit(2)


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run` with one-line errors for bad flags, config overrides and config values (exit code 2)."""
  from absl import app, flags  # noqa: PLC0415

  install_flag_parsers()

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
