"""Entry point for Bazel's py_test: runs pytest on the test file given as argument."""

import os
import sys

import pytest

if __name__ == "__main__":
  here = os.path.dirname(os.path.abspath(__file__))
  sys.path.insert(0, here)
  sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
