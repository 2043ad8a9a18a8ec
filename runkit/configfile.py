"""`get_config()` of a Python config file given by path, as absl's `config_flags` loads `--config=FILE`.

Config files (`configs/**/*.py`, peg geometries, hardware files) are Python modules with a `get_config()`
function. Loading one for library use, notebooks or tests goes through `load_config_file`, which turns every
way a file can be wrong into one `ConfigError` line naming the file: missing, not a `.py` file, a syntax or
import error inside it (with its line number), or no `get_config`. The implementation lives in `confspec`
(which has no dependency), because `confspec.run` loads every binary's `--config=FILE` through it too.
"""

from __future__ import annotations

from confspec import load_config_file

__all__ = ["load_config_file"]
