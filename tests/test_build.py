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
