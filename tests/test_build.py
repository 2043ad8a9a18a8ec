"""BUILD and the tree agree: every source file, binary and test file has its Bazel target."""

import ast
import os

from conftest import REPO


def _literal(node):
  try:
    return ast.literal_eval(node)
  except ValueError:  # glob(...) and other computed values
    return None


def _targets():
  """Parses BUILD as the Starlark subset it is (calls with keyword literals), without Bazel."""
  tree = ast.parse(open(os.path.join(REPO, "BUILD")).read())
  targets = []
  for node in tree.body:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
      call = node.value
      kwargs = {k.arg: _literal(k.value) for k in call.keywords}
      targets.append((call.func.id, kwargs))
  return targets


def _tree_py(top):
  out = set()
  for d, dirs, files in os.walk(os.path.join(REPO, top)):
    dirs[:] = [x for x in dirs if not x.startswith((".", "__"))]
    out |= {os.path.relpath(os.path.join(d, f), REPO) for f in files if f.endswith(".py")}
  return out


def test_every_source_file_is_in_a_library():
  libs = {kw["name"]: set(kw["srcs"]) for kind, kw in _targets() if kind == "py_library"}
  for pkg in ("confspec", "runkit", "pangu_jax", "npu_backend", "control_brax", "experiments"):
    files = _tree_py(pkg)
    if files:
      assert libs.get(pkg) == files, f"BUILD's {pkg} library differs from the tree: run python tools/gen_build.py"


def test_every_test_file_has_a_py_test_and_every_target_exists():
  targets = _targets()
  tested = {a for kind, kw in targets if kind == "py_test" for a in kw["args"]}
  test_files = {f for f in _tree_py("tests") if os.path.basename(f).startswith("test_")}
  assert tested == test_files
  for _, kw in targets:
    for src in kw.get("srcs", []):
      assert os.path.exists(os.path.join(REPO, src)), f"BUILD names a missing file: {src}"


def test_every_binary_module_has_a_py_binary():
  mains = {kw["main"] for kind, kw in _targets() if kind == "py_binary"}
  for mod in ("pangu_jax/info.py", "pangu_jax/generate.py", "experiments/demo.py"):
    assert mod in mains
  for pkg in ("pangu_jax", "npu_backend", "control_brax", "experiments"):
    for f in _tree_py(pkg):
      src = open(os.path.join(REPO, f)).read()
      if '__name__ == "__main__"' in src and os.path.dirname(f) == pkg:
        assert f in mains, f"{f} is a binary without a py_binary target"


# The binaries' flag idiom (confspec's module docstring): flags are defined only inside the `__main__` guard, as
# typed holders, and the guard ends in `confspec.run(main)`; so any number of binary modules import side by side.
BINARY_TREES = ("pangu_jax", "npu_backend", "control_brax", "experiments", "benchmarks")
_FLAG_DEFINERS = ("DEFINE", "mark_flag", "mark_flags", "mark_bool_flags", "adopt_module_key_flags")


def _is_main_guard(node) -> bool:
  return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and isinstance(node.test.left, ast.Name)
          and node.test.left.id == "__name__" and len(node.test.comparators) == 1
          and isinstance(node.test.comparators[0], ast.Constant) and node.test.comparators[0].value == "__main__")


def _binary_files() -> list[str]:
  files = []
  for top in BINARY_TREES:
    for f in sorted(_tree_py(top)):
      if any(_is_main_guard(n) for n in ast.parse(open(os.path.join(REPO, f)).read()).body):
        files.append(f)
  return files


def _calls(nodes):
  for node in nodes:
    for sub in ast.walk(node):
      if isinstance(sub, ast.Call):
        yield sub


def test_every_binary_defines_its_flags_in_the_main_guard_and_runs_through_confspec():
  files = _binary_files()
  assert {"pangu_jax/info.py", "control_brax/train.py", "experiments/sim_report.py", "benchmarks/export.py"} <= set(
      files)
  for f in files:
    tree = ast.parse(open(os.path.join(REPO, f)).read())
    guards = [n for n in tree.body if _is_main_guard(n)]
    rest = [n for n in tree.body if not _is_main_guard(n)]
    assert len(guards) == 1, f"{f}: one `if __name__ == \"__main__\":` guard"
    guard = guards[0]
    last = guard.body[-1]
    assert (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and ast.unparse(last.value) == "confspec.run(main)"), f"{f}: the guard must end in confspec.run(main)"
    for call in _calls(rest):  # module level and every function: no flag is defined outside the guard
      name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
      assert not name.startswith(_FLAG_DEFINERS), f"{f}:{call.lineno}: {name} outside the __main__ guard"
    for sub in ast.walk(tree):
      assert not (isinstance(sub, ast.Attribute) and sub.attr == "FLAGS"), (
          f"{f}:{sub.lineno}: flags.FLAGS attribute access; read the typed holder's .value")
      if isinstance(sub, ast.Import | ast.ImportFrom):
        mods = [a.name for a in sub.names] if isinstance(sub, ast.Import) else [sub.module or ""]
        assert "argparse" not in mods and "absl.app" not in mods, f"{f}:{sub.lineno}: absl flags + confspec.run"
      if isinstance(sub, ast.ImportFrom) and sub.module == "absl":
        assert "app" not in [a.name for a in sub.names], f"{f}:{sub.lineno}: confspec.run, not absl.app.run"
    guarded = {id(c) for w in guard.body if isinstance(w, ast.With)
               and [ast.unparse(i.context_expr) for i in w.items] == ["confspec.flag_errors()"] for c in _calls(w.body)}
    for call in _calls(guard.body):
      name = call.func.attr if isinstance(call.func, ast.Attribute) else ""
      default = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "default"),
                                                              None)
      if name == "DEFINE_config_dict" or (name == "DEFINE_config_file" and default is not None
                                          and not (isinstance(default, ast.Constant) and default.value is None)):
        assert id(call) in guarded, (f"{f}:{call.lineno}: a config flag with a default config applies the overrides "
                                     "as it is defined: define it inside `with confspec.flag_errors():`")
    stmts = [s for n in guard.body for s in (n.body if isinstance(n, ast.With) else [n])]
    for s in stmts:  # typed holders: `_NAME = flags.DEFINE_...(...)`
      if isinstance(s, ast.Assign):
        assert all(isinstance(t, ast.Name) and t.id.startswith("_") and t.id[1:].isupper() for t in s.targets), (
            f"{f}:{s.lineno}: a flag holder is a module-level _UPPER_CASE name")


def test_every_binary_module_imports_in_one_process_without_defining_flags():
  """Tests and other modules import binaries as libraries (control_brax.evaluate imports control_brax.train):
  importing all of them together defines none of their flags, so absl raises no DuplicateFlagError."""
  import subprocess  # noqa: PLC0415
  import sys  # noqa: PLC0415

  mods = []
  for f in _binary_files():
    mod = f[:-3].replace("/__main__", "").replace("/", ".")
    mods.append(mod.split(".", 1)[1] if f.startswith("benchmarks/") else mod)
  code = ("import importlib, sys\n"
          f"sys.path.insert(0, {os.path.join(REPO, 'benchmarks')!r})\n"
          "from absl import flags\n"
          f"for m in {mods!r}:\n"
          "  importlib.import_module(m)\n"
          "common = {'config', 'workdir', 'out', 'json', 'seed', 'progress'} & set(flags.FLAGS)\n"
          "assert not common, f'flags defined on import: {sorted(common)}'\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
