"""Offline stand-in for @rules_java//java:defs.bzl: forwards to Bazel 4's native Java rules.

Bazel 4.2's own @bazel_tools//tools/jdk loads these symbols; nothing in this repository is Java.
"""

def java_binary(**kwargs):
    native.java_binary(**kwargs)

def java_import(**kwargs):
    native.java_import(**kwargs)

def java_runtime(**kwargs):
    native.java_runtime(**kwargs)

def java_toolchain(**kwargs):
    native.java_toolchain(**kwargs)
