"""How `meshplane bench` reads a process's CPU time: finer than the 10 ms clock tick, so a short phase's
agents, which use a few milliseconds in all, are not counted as 0. (CPU time only, never wall-clock.)"""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from controlplane.bench.cpu import cpu_seconds

pytestmark = pytest.mark.timeout(30)

BURNER = """
import sys, time
for line in sys.stdin:
    until = time.process_time() + float(line)
    while time.process_time() < until:
        pass
    print("done", flush=True)
"""


def test_a_few_milliseconds_of_cpu_are_counted_as_such() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        process = psutil.Process(child.pid)
        child.stdin.write("0.001\n")  # warm up: the interpreter's start-up is not part of the figure
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        before = cpu_seconds(process)
        child.stdin.write("0.003\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        used = cpu_seconds(process) - before
        assert 0.003 <= used < 0.008  # clock ticks would read 0 or 0.01
    finally:
        child.kill()
        child.wait()
