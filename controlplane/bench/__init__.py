"""`meshplane bench`: the control plane's performance figures, measured in one run on this machine.

Everything runs here at once, as the figures require: a throwaway PostgreSQL (fsync and synchronous
commit on), the control plane (its own process), no-op agents (their own processes), the client load
(its own process; Python, or with ``--load-client go`` the Go load generator). Printed: batch and
single-submit throughput (submitted to result persisted), single submits again through the gateway's
gRPC ingress (which sends concurrent submits to the plane in batches), one caller's submit latency,
bare grpc.aio echo calls (a stream, and unary calls) as the machine's ceilings and our ratios to them,
a lone database commit (with the bare unary call, the floor under one caller's latency), and the RSS/CPU
of a control plane holding many idle agent sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.context
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from controlplane.bench import commit, echo, load, noop_agent
from controlplane.bench.cpu import cpu_seconds
from controlplane.cli.gateway import Gateway, find_gateway, find_go_binary
from controlplane.devtools.postgres import PostgresServer

CAPABILITY = "bench.noop"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default: a throwaway server for the run)")
    parser.add_argument("--tasks", type=int, default=50_000, help="tasks in the batch phase")
    parser.add_argument("--batch", type=int, default=100, help="tasks per BatchSubmitTasks call")
    parser.add_argument("--batch-callers", type=int, default=8, help="concurrent BatchSubmitTasks callers")
    parser.add_argument("--single-tasks", type=int, default=20_000, help="tasks in the single-submit phase")
    parser.add_argument("--callers", type=int, default=64, help="concurrent SubmitTask callers")
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="client connections the concurrent callers (batch, single and unary echo) spread over",
    )
    parser.add_argument(
        "--accept-loops", type=int, default=8, help="gRPC servers the plane and the echo listen with (one port)"
    )
    parser.add_argument("--latency-samples", type=int, default=2_000, help="sequential submits for latency")
    parser.add_argument("--agent-processes", type=int, default=2)
    parser.add_argument("--agents-per-process", type=int, default=2)
    parser.add_argument("--agent-concurrency", type=int, default=512, help="max_concurrency of each agent")
    parser.add_argument("--idle-sessions", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="how long idle CPU is measured")
    parser.add_argument("--echo-seconds", type=float, default=5.0)
    parser.add_argument(
        "--load-client",
        choices=["python", "go"],
        default="python",
        help="what makes the submits: Python stubs, or the Go load generator (meshplane-loadgen: make gateway-build)",
    )
    parser.add_argument(
        "--skip", action="append", default=[], choices=["batch", "single", "gateway", "latency", "echo", "idle"]
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")


# ------------------------------------------------------------------ processes


class PlaneProcess:
    """A control plane in its own process (controlplane.devtools.serve), with its metrics endpoint."""

    def __init__(self, database_url: str, data_dir: Path, **settings: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MESHPLANE_DATABASE_URL": database_url,
            "MESHPLANE_DATA_DIR": str(data_dir),
            "MESHPLANE_LISTEN": "127.0.0.1:0",
            "MESHPLANE_METRICS_LISTEN": "127.0.0.1:0",
            "MESHPLANE_LOG_LEVEL": "WARNING",
            **{f"MESHPLANE_{k.upper()}": v for k, v in settings.items()},
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.devtools.serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=(data_dir / "plane.log").open("a"),
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.process.kill()
            raise RuntimeError(f"the control plane did not start; see {data_dir / 'plane.log'}")
        _, self.address, self.metrics_address = line.split()
        self.ps = psutil.Process(self.process.pid)

    def metric(self, name: str, labels: str = "") -> float:
        return scrape_value(f"http://{self.metrics_address}/metrics", name, labels)

    def succeeded(self) -> float:
        return self.metric("meshplane_tasks_ended_total", 'state="SUCCEEDED"')

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def scrape_value(url: str, name: str, labels: str = "") -> float:
    """One series' value from a Prometheus endpoint (0 when absent); `labels` as exposed: 'state="SUCCEEDED"'."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def _spawn() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")


def _postgres_cpu() -> float:
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            try:
                total += cpu_seconds(proc)
            except psutil.Error:
                continue
    return total


_MIN_POLL_PAUSE = 0.02  # seconds between scrapes of the plane (see _wait_for)
_MAX_POLL_PAUSE = 0.5


async def _wait_for(read: Callable[[], float], target: float, timeout: float, what: str) -> None:
    """Poll `read` (a scrape, run in a thread: a saturated plane can be slow to answer) until it reaches
    `target`.

    Each scrape costs the plane ~1.5 ms of CPU, which the phase's figures would count as its own: polls
    are spaced by half the time the count's rate says is left (at most 0.5 s apart, at least 20 ms), so a
    phase of seconds takes tens of scrapes rather than hundreds and still ends within ~20 ms of done.
    """
    deadline = time.monotonic() + timeout
    last: tuple[float, float] | None = None  # (when, count)
    while True:
        try:
            count = await asyncio.to_thread(read)
        except OSError:  # a scrape that timed out: the plane is busy, ask again
            count = None
        now = time.monotonic()
        if count is not None:
            if count >= target:
                return
            pause = _MAX_POLL_PAUSE
            if last is not None and count > last[1]:
                rate = (count - last[1]) / (now - last[0])
                pause = min(_MAX_POLL_PAUSE, max(_MIN_POLL_PAUSE, (target - count) / rate / 2))
            last = (now, count)
        else:
            pause = _MIN_POLL_PAUSE
        if now > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(pause)


# ------------------------------------------------------------------ phases


async def _run_load(
    client: str, kind: str, address: str, total: int, batch: int, callers: int, connections: int
) -> load.LoadResult:
    """The client load, in its own process."""
    if client == "go":
        return await _run_go_load(kind, address, total, batch, callers, connections)
    arguments = (kind, address, CAPABILITY, total, batch, callers, connections)
    with _spawn().Pool(1) as pool:
        return await asyncio.to_thread(pool.apply, load.run_load, arguments)


async def _run_go_load(
    kind: str, address: str, total: int, batch: int, callers: int, connections: int
) -> load.LoadResult:
    binary = find_go_binary("meshplane-loadgen", "MESHPLANE_LOADGEN_BIN")
    if binary is None:
        raise RuntimeError("--load-client go needs meshplane-loadgen: run `make gateway-build`")
    process = await asyncio.create_subprocess_exec(
        str(binary),
        *("--target", address, "--mode", kind, "--total", str(total), "--batch", str(batch)),
        *("--callers", str(callers), "--connections", str(connections), "--capability", CAPABILITY),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"meshplane-loadgen failed: {err.decode(errors='replace').strip()}")
    figures = json.loads(out)
    return load.LoadResult(figures["submitted"], figures["seconds"], figures["latencies_ms"], figures["cpu_seconds"])


async def _throughput(
    plane: PlaneProcess,
    agents: list[psutil.Process],
    args: argparse.Namespace,
    kind: str,
    total: int,
    batch: int,
    callers: int,
    gateway: Gateway | None = None,
) -> dict[str, Any]:
    """Submit `total` tasks (to the plane, or through the gateway) and time them until every result is persisted."""
    baseline = plane.succeeded()
    target = gateway.grpc_address if gateway is not None else plane.address
    gateway_ps = psutil.Process(gateway.pid) if gateway is not None and gateway.pid is not None else None
    plane_cpu, pg_cpu, agents_cpu = cpu_seconds(plane.ps), _postgres_cpu(), sum(map(cpu_seconds, agents))
    gateway_cpu = cpu_seconds(gateway_ps) if gateway_ps is not None else 0.0
    started = time.perf_counter()
    load_run = _run_load(args.load_client, kind, target, total, batch, callers, args.connections)
    pending = asyncio.create_task(load_run)
    await _wait_for(plane.succeeded, baseline + total, 600, f"{total} results")
    elapsed = time.perf_counter() - started
    result = await pending
    figures: dict[str, Any] = {
        "tasks": total,
        "connections": args.connections,
        "load_client": args.load_client,
        "tasks_per_second": round(total / elapsed),
        "submitted_per_second": round(result.submitted / result.seconds),
        "seconds": round(elapsed, 2),
        "plane_cpu_us_per_task": round((cpu_seconds(plane.ps) - plane_cpu) / total * 1e6),
        "postgres_cpu_us_per_task": round((_postgres_cpu() - pg_cpu) / total * 1e6),
        "client_cpu_us_per_task": round(result.cpu_seconds / total * 1e6),
        "agents_cpu_us_per_task": round((sum(map(cpu_seconds, agents)) - agents_cpu) / total * 1e6),
    }
    if gateway_ps is not None:
        figures["gateway_cpu_us_per_task"] = round((cpu_seconds(gateway_ps) - gateway_cpu) / total * 1e6)
    if gateway is not None and gateway.metrics_url:
        figures["gateway_submits_per_upstream_call"] = _mean_gateway_batch(gateway.metrics_url)
    if result.latencies_ms:
        figures["submit_p50_ms"] = round(statistics.median(result.latencies_ms), 2)
    return figures


def _mean_gateway_batch(metrics_url: str) -> float:
    """How many submits the gateway sent upstream per call, on average (its batch-size histogram)."""
    submits = scrape_value(metrics_url, "meshplane_gateway_submit_batch_size_sum")
    calls = scrape_value(metrics_url, "meshplane_gateway_submit_batch_size_count")
    return round(submits / calls, 1) if calls else 0.0


async def _through_gateway(
    plane: PlaneProcess, agents: list[psutil.Process], args: argparse.Namespace
) -> dict[str, Any]:
    """The single-submit phase again, the callers connected to the gateway's gRPC ingress."""
    binary = find_gateway()
    if binary is None:
        return {"skipped": "the gateway is not built (make gateway-build)"}
    gateway = Gateway(
        binary,
        listen="127.0.0.1:0",
        upstream=plane.address,
        grpc_listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        extra_args=["--log-level=warn"],
    )
    await gateway.start()
    try:
        return await _throughput(plane, agents, args, "single", args.single_tasks, 1, args.callers, gateway)
    finally:
        await gateway.stop()


async def _latency(plane: PlaneProcess, args: argparse.Namespace) -> dict[str, Any]:
    samples = args.latency_samples
    result = await _run_load(args.load_client, "single", plane.address, samples, 1, 1, 1)
    latencies = sorted(result.latencies_ms)
    return {
        "samples": samples,
        "load_client": args.load_client,
        "p50_ms": round(latencies[len(latencies) // 2], 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 3),
        "max_ms": round(latencies[-1], 3),
    }


async def _echo(seconds: float, connections: int, accept_loops: int) -> dict[str, Any]:
    context = _spawn()
    parent, child = context.Pipe()
    server = context.Process(target=echo.serve_echo, args=(child, accept_loops), daemon=True)
    server.start()
    port = parent.recv()
    try:
        with context.Pool(1) as pool:
            one = pool.apply(echo.measure_echo, (f"127.0.0.1:{port}", 1, seconds))
            many = pool.apply(echo.measure_echo, (f"127.0.0.1:{port}", 64, seconds, 4))
            unary_one, unary_one_p50 = pool.apply(echo.measure_unary, (f"127.0.0.1:{port}", 1, seconds))
            unary_many, _ = pool.apply(echo.measure_unary, (f"127.0.0.1:{port}", 64, seconds, connections))
    finally:
        parent.send("stop")
        server.join(timeout=10)
    return {
        "one_stream_round_trips_per_second": round(one),
        "64_streams_round_trips_per_second": round(many),
        "unary_one_caller_calls_per_second": round(unary_one),
        "unary_one_caller_p50_ms": round(unary_one_p50, 3),
        "unary_64_callers_calls_per_second": round(unary_many),
    }


async def _idle(database_url: str, work: Path, sessions: int, seconds: float, accept_loops: int) -> dict[str, Any]:
    plane = PlaneProcess(database_url, work / "idle", accept_loops=str(accept_loops))
    processes = []
    try:
        per_process = 2_500
        context = _spawn()
        for start in range(0, sessions, per_process):
            count = min(per_process, sessions - start)
            process = context.Process(
                target=noop_agent.run_agents,
                args=(plane.address, count, "bench.idle", 1),
                kwargs={"idle": True, "per_channel": 20},
                daemon=True,
            )
            process.start()
            processes.append(process)
        connect_started = time.perf_counter()
        await _wait_for(lambda: plane.metric("meshplane_agent_sessions"), sessions, 900, f"{sessions} sessions")
        connect_seconds = time.perf_counter() - connect_started
        await asyncio.sleep(5)  # let registration settle, then measure steady heartbeats
        before = cpu_seconds(plane.ps)
        await asyncio.sleep(seconds)
        cpu_percent = (cpu_seconds(plane.ps) - before) / seconds * 100
        return {
            "sessions": sessions,
            "connect_seconds": round(connect_seconds, 1),
            "plane_rss_mb": round(plane.ps.memory_info().rss / 2**20),
            "plane_cpu_percent_of_one_core": round(cpu_percent, 1),
            "heartbeat_interval_seconds": 5,
        }
    finally:
        for process in processes:
            process.terminate()
        plane.stop()


# ------------------------------------------------------------------ run


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="meshplane-bench-"))
    postgres: PostgresServer | None = None
    figures: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "plane": {"accept_loops": args.accept_loops},
    }
    say: Callable[[str], None] = (lambda _text: None) if args.json else (lambda text: print(text, flush=True))
    try:
        database_url = args.database_url
        if not database_url:
            say("starting a throwaway PostgreSQL (fsync on, synchronous_commit on)...")
            postgres = PostgresServer(fsync=True).start()
            database_url = postgres.create_database()
        figures["database"] = "postgresql (throwaway)" if postgres else "postgresql"

        if "echo" not in args.skip:
            say("measuring the bare grpc.aio echo ceiling...")
            figures["echo_ceiling"] = await _echo(args.echo_seconds, args.connections, args.accept_loops)
            say("measuring a lone database commit...")
            figures["database_commit"] = await commit.measure_commit(database_url, args.latency_samples)

        if {"batch", "single", "gateway", "latency"} - set(args.skip):
            plane = PlaneProcess(database_url, work, accept_loops=str(args.accept_loops))
            agents = []
            try:
                context = _spawn()
                for _ in range(args.agent_processes):
                    process = context.Process(
                        target=noop_agent.run_agents,
                        args=(plane.address, args.agents_per_process, CAPABILITY, args.agent_concurrency),
                        daemon=True,
                    )
                    process.start()
                    agents.append(process)
                expected = args.agent_processes * args.agents_per_process
                await _wait_for(lambda: plane.metric("meshplane_agent_sessions"), expected, 60, "agents")
                agent_processes = [psutil.Process(process.pid) for process in agents]
                if "batch" not in args.skip:
                    say(f"batch phase: {args.tasks} tasks, {args.batch} per call, {args.batch_callers} callers...")
                    figures["batch_submit"] = await _throughput(
                        plane, agent_processes, args, "batch", args.tasks, args.batch, args.batch_callers
                    )
                if "single" not in args.skip:
                    say(
                        f"single-submit phase: {args.single_tasks} tasks, {args.callers} concurrent callers "
                        f"over {args.connections} connections..."
                    )
                    figures["single_submit"] = await _throughput(
                        plane, agent_processes, args, "single", args.single_tasks, 1, args.callers
                    )
                if "gateway" not in args.skip:
                    say(f"single-submit phase through the gateway's gRPC ingress: {args.single_tasks} tasks...")
                    figures["single_submit_via_gateway"] = await _through_gateway(plane, agent_processes, args)
                if "latency" not in args.skip:
                    say(f"latency phase: {args.latency_samples} sequential submits from one caller...")
                    figures["one_caller_latency"] = await _latency(plane, args)
            finally:
                for process in agents:
                    process.terminate()
                plane.stop()

        if "echo_ceiling" in figures:
            add_ratios(figures)

        if "idle" not in args.skip:
            say(f"idle phase: {args.idle_sessions} agent sessions, CPU over {args.idle_seconds:.0f}s...")
            idle_url = postgres.create_database() if postgres else database_url
            figures["idle_sessions"] = await _idle(
                idle_url, work, args.idle_sessions, args.idle_seconds, args.accept_loops
            )
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(render(figures))
    return 0


def add_ratios(figures: dict[str, Any]) -> None:
    """Each figure against the bare call it is made of: batches are streamed, single submits are unary."""
    ceiling = figures["echo_ceiling"]
    if "batch_submit" in figures:
        batch = figures["batch_submit"]
        batch["ratio_to_one_stream_echo"] = round(
            batch["tasks_per_second"] / ceiling["one_stream_round_trips_per_second"], 2
        )
    for phase in ("single_submit", "single_submit_via_gateway"):
        single = figures.get(phase, {})
        if "tasks_per_second" in single:
            single["ratio_to_64_caller_unary_echo"] = round(
                single["tasks_per_second"] / ceiling["unary_64_callers_calls_per_second"], 2
            )
    if "one_caller_latency" in figures:
        latency = figures["one_caller_latency"]
        latency["bare_unary_p50_ms"] = ceiling["unary_one_caller_p50_ms"]
        if "database_commit" in figures:
            # A submit is at least one unary call and one commit: the floor under the median. One caller's
            # commits come milliseconds apart, each waking an idle database: the second floor counts that.
            commit_figures = figures["database_commit"]
            latency["floor_p50_ms"] = round(latency["bare_unary_p50_ms"] + commit_figures["p50_ms"], 3)
            if "p50_after_idle_ms" in commit_figures:
                latency["floor_after_idle_p50_ms"] = round(
                    latency["bare_unary_p50_ms"] + commit_figures["p50_after_idle_ms"], 3
                )


def render(figures: dict[str, Any]) -> str:
    lines = ["", "meshplane bench results", "======================="]
    for section, values in figures.items():
        if isinstance(values, dict):
            lines.append(f"{section}:")
            lines.extend(f"  {key:36s} {value}" for key, value in values.items())
        else:
            lines.append(f"{section}: {values}")
    return "\n".join(lines)


def main() -> int:
    """`python -m controlplane.bench` (the same as `meshplane bench`)."""
    parser = argparse.ArgumentParser(prog="meshplane bench", description=__doc__)
    add_arguments(parser)
    from controlplane.runtime import run_event_loop

    result: list[int] = []

    async def go() -> None:
        result.append(await run(parser.parse_args()))

    run_event_loop(go())
    return result[0]
