"""Offline stand-in for @rules_cc//cc:defs.bzl: forwards to Bazel 4's native C++ rules.

Bazel 4.2's own @bazel_tools//tools/cpp loads these three symbols; without network access Bazel cannot
download rules_cc, and Debian's bazel-rules-cc is too new for Bazel 4.2. Nothing in this repository is C++.
"""

def cc_library(**kwargs):
    native.cc_library(**kwargs)

def cc_toolchain(**kwargs):
    native.cc_toolchain(**kwargs)

def cc_toolchain_suite(**kwargs):
    native.cc_toolchain_suite(**kwargs)

def cc_binary(**kwargs):
    native.cc_binary(**kwargs)

def cc_test(**kwargs):
    native.cc_test(**kwargs)

def cc_import(**kwargs):
    native.cc_import(**kwargs)

def objc_library(**kwargs):
    native.objc_library(**kwargs)

def cc_proto_library(**kwargs):
    native.cc_proto_library(**kwargs)

def fdo_prefetch_hints(**kwargs):
    native.fdo_prefetch_hints(**kwargs)

def fdo_profile(**kwargs):
    native.fdo_profile(**kwargs)
