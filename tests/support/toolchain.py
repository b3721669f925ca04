"""Find the external toolchains (Go, Node, Docker, ...) that some tests need.

A test that needs a tool asks for it with :func:`require_tool`. On a developer machine
that lacks the tool the test is *skipped* with a visible reason; under ``CI=true`` the
same situation is a *failure*, because CI is supposed to have every toolchain installed
(``.ci/run`` installs them) and a silently skipped interop test proves nothing.

Example::

    go = require_tool("go", "the Go interop client is built with the Go toolchain")
    subprocess.run([go, "build", ...], check=True)
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

__all__ = ["in_ci", "require_tool", "toolchain_missing"]


def in_ci() -> bool:
    """True when running under CI (the environment variable ``CI`` is ``true``)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def toolchain_missing(message: str) -> NoReturn:
    """Skip the current test with ``message`` — or fail it when running under CI."""
    __tracebackhide__ = True  # report the calling test's line, not this helper's
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing toolchain is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def require_tool(name: str, reason: str) -> str:
    """Return the absolute path of the executable ``name``, or skip/fail the test.

    ``name`` is looked up on ``PATH`` (``shutil.which``); it may also be a path to an
    executable file, e.g. ``node_modules/.bin/tsc``. ``reason`` says what the tool is
    needed for (and, ideally, how to get it); it is shown in the skip/fail message.
    """
    __tracebackhide__ = True
    path = shutil.which(name)
    if path is None:
        toolchain_missing(f"{name} not found: {reason}")
    return os.path.abspath(path)
