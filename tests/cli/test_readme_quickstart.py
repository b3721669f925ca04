"""Every command in the README's Quickstart works as written (against `meshplane up --demo`)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, Mesh, cli_env, lines, read_line

pytestmark = pytest.mark.timeout(120)

AGENT_RUN = ".venv/bin/meshplane agent run examples/python/minimal_agent.py:agent"


def quickstart() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Quickstart\n(.*?)^## ", text, flags=re.DOTALL | re.MULTILINE)
    assert match, "README.md has no ## Quickstart section"
    return match.group(1)


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", quickstart(), flags=re.DOTALL)


def commands() -> list[str]:
    found = []
    for block in blocks("bash"):
        found += [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return found


def shell(command: str, address: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=cli_env(address),  # the README uses the default target; this mesh runs on another port
    )


def test_make_run_is_meshplane_up_demo() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert recipe is not None
    lines = recipe.group(1).splitlines()
    assert lines[-1] == "\t$(VENV)/bin/meshplane up --demo"
    assert "command -v go" in lines[0] and "gateway-build" in recipe.group(1)  # the REST gateway, when Go is there
    assert "`make run` starts the mesh with demo agents (`meshplane up --demo`" in quickstart()


def test_the_agent_in_the_readme_is_the_example_file() -> None:
    [readme_code] = blocks("python")
    example = (REPO / "examples/python/minimal_agent.py").read_text()
    assert readme_code.strip() in example
    assert len(example.splitlines()) <= 20


def test_the_quickstart_commands_work_as_written(mesh: Mesh, tmp_path: Path) -> None:
    found = commands()
    assert AGENT_RUN in found
    looks = [c for c in found if " ls" in c]  # read what the others wrote: they run once those are done
    independent = [c for c in found if c != AGENT_RUN and "hello.greet" not in c and c not in looks]
    assert len(independent) >= 4 and len(looks) == 2

    # The demo commands do not depend on each other: run them all at once.
    running = {command: shell(command, mesh.address) for command in independent}
    agent = shell(AGENT_RUN, mesh.address)
    try:
        read_line(agent, "agent hello connected", timeout=30)
        [greet_command] = [c for c in found if "hello.greet" in c]
        greet = shell(greet_command, mesh.address)
        greeting, greet_errors = greet.communicate(timeout=60)
        assert greet.returncode == 0, greet_errors
        assert json.loads(greeting) == {"greeting": "Hello, Ada!"}
        agent.send_signal(signal.SIGINT)  # "Ctrl-C"
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()

    outputs = {}
    for command, process in running.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, f"{command}\n{err}"
        outputs[command] = out
    for command in looks:
        look = shell(command, mesh.address)
        out, err = look.communicate(timeout=60)
        assert look.returncode == 0, f"{command}\n{err}"
        outputs[command] = out

    def output_of(fragment: str) -> str:
        [out] = [out for command, out in outputs.items() if fragment in command]
        return out

    assert json.loads(output_of("demo.echo")) == {"text": "hi"}
    assert lines(output_of("task watch"))[-1].endswith('output={"slept": 3}')
    assert json.loads(output_of("demo.flaky")) == {"attempt": 3}
    assert lines(output_of("task ls"))[0].startswith("ID ")
    assert "demo.echo demo.sleep demo.flaky" in output_of("agents ls")
    client_output = output_of("examples/python/client.py")
    assert "demo.echo -> {'text': 'hi'}" in client_output
    assert "invalid input -> FAILED validation_failed" in client_output
