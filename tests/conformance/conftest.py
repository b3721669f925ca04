"""Fixtures of the conformance suite: every scenario runs once per language of driver.LANGUAGES."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path

import pytest

from controlplane.app import ControlPlane
from tests.conformance import driver
from tests.support.plane import running_plane

_HERE = Path(__file__).resolve().parent


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the agents of the selected languages before any test runs, outside per-test timeouts.

    A selected test module may also define ``prepare_conformance()`` (no arguments, raises nothing): it is
    called once here, for builds of its own (test_mixed_language.py: every agent and client).
    """
    if session.config.option.collectonly:
        return
    wanted: set[str] = set()
    preparers: dict[str, Callable[[], None]] = {}
    for item in session.items:
        if _HERE not in Path(str(item.path)).resolve().parents:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            language = callspec.params.get("language")
            if language in driver.LANGUAGES:
                wanted.add(language)
        preparer = getattr(getattr(item, "module", None), "prepare_conformance", None)
        if callable(preparer):
            preparers[str(item.path)] = preparer
    for language in driver.LANGUAGES:
        if language in wanted:
            driver.prepare(language)
    for preparer in preparers.values():
        preparer()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    setattr(item, f"conformance_{call.when}_failed", getattr(report, "failed", False))
    return report


@pytest.fixture(params=driver.LANGUAGES)
def language(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def launcher(language: str) -> driver.Launcher:
    """The language's built launcher (skips/fails here, before any plane starts, if there is none)."""
    return driver.launcher(language)


@pytest.fixture
async def plane(agents: driver.Agents, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    """A control plane for one scenario. On the way out its agents are stopped first, and the plane
    is only stopped once it has recorded their disconnection (see driver.Mesh.wait_all_disconnected)."""
    async with running_plane(tmp_path / "plane") as started:
        try:
            yield started
        finally:
            await agents.close()
            async with driver.Mesh(started.address) as mesh:
                await mesh.wait_all_disconnected()


@pytest.fixture
async def mesh(plane: ControlPlane) -> AsyncIterator[driver.Mesh]:
    async with driver.Mesh(plane.address) as opened:
        yield opened


@pytest.fixture
async def agents(
    launcher: driver.Launcher, language: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[driver.Agents]:
    """Starts conformance agents; kills them at the end and prints their output if the test failed."""
    started = driver.Agents(launcher, language, tmp_path)
    try:
        yield started
    finally:
        await started.close()
        if getattr(request.node, "conformance_call_failed", False) or getattr(
            request.node, "conformance_setup_failed", False
        ):
            print(f"---- conformance agents ({language}) ----\n{started.report()}")
