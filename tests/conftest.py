"""``@pytest.mark.needs(missing, reason)``: a test that needs an installed piece (MiniLM's weights, tokenizers,
a C compiler, the real MNIST files beside the project) skips where it is missing, except under CI (the CI
variable, set by .ci/run), where it fails: CI installs every piece and must run every such test."""

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(missing, reason): skip where missing is true, fail under CI")


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="needs"):
        missing, reason = mark.args
        if missing:
            if os.environ.get("CI"):
                pytest.fail(f"{reason}; CI must run this test (.ci/run installs what it needs)", pytrace=False)
            pytest.skip(reason)
