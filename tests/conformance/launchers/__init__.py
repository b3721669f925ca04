"""Per-language launchers of the conformance agent (tests/conformance/CONTRACT.md).

A launcher is a module ``launchers/<language>.py`` exposing:

``LANGUAGE: str``
    The language name, the same as the module name (``"python"``, ``"go"``, ``"typescript"``).

``def build() -> None``
    Compile the conformance agent (called once per test session, before the first scenario of
    that language). Call ``tests.support.toolchain.require_tool(...)`` for every tool it needs, so
    a missing toolchain skips locally and fails under ``CI=true``. Raise on a failed build.

``def command(target: str, name: str, instance_id: str, max_concurrency: int, token: str | None = None) -> list[str]``
    The argv that starts the agent with the contract's command line (the driver appends the contract's
    optional flags, such as ``--drain-timeout``, after it). The started process must be
    the agent itself (no shell or package-manager wrapper in between): the driver sends SIGTERM to
    it and expects ``STOPPED`` and exit status 0 from it. It inherits the test's environment.

The driver (``tests/conformance/driver.py``) imports ``tests.conformance.launchers.<language>`` for
every language of :data:`tests.conformance.driver.LANGUAGES`; a missing module skips that language's
scenarios locally and fails them under ``CI=true``.
"""


def agent_flags(target: str, name: str, instance_id: str, max_concurrency: int, token: str | None) -> list[str]:
    """The contract's command-line flags, the same for every language (the launcher puts its program first)."""
    flags = [
        "--target",
        target,
        "--name",
        name,
        "--instance-id",
        instance_id,
        "--max-concurrency",
        str(max_concurrency),
    ]
    if token is not None:
        flags += ["--token", token]
    return flags
