"""``meshplane task ...``: submit, get, watch, cancel, re-submit and list tasks."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys

from agent_runtime import MeshClient, Page, TaskEvent, TaskFailed, TaskHandle, TaskInfo, TaskState
from controlplane.cli import output
from controlplane.cli.common import (
    CliError,
    add_connection_options,
    add_output_option,
    client,
    duration_argument,
    int_argument,
    json_argument,
    key_value_arguments,
)

_STATES = [s.value.lower() for s in TaskState if s is not TaskState.UNSPECIFIED]
_STRATEGIES = ["least_loaded", "round_robin", "weighted", "consistent_hash"]
_MAX_PAGE = 1000  # the most tasks the plane sends in one page
_MAX_INT64 = 2**63 - 1


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    task = subparsers.add_parser("task", help="submit, inspect, watch, cancel and re-submit tasks")
    commands = task.add_subparsers(dest="task_command", metavar="COMMAND", required=True)

    submit = commands.add_parser("submit", help="submit a task (prints its id, or its output with --wait)")
    submit.add_argument("capability", help="the capability to run, e.g. demo.echo")
    submit.add_argument("--input", "-i", default="null", help="the input: JSON, @FILE or @- (stdin)")
    submit.add_argument("--priority", type=int, default=0, help="higher runs first (-1000..1000)")
    submit.add_argument(
        "--idempotency-key",
        default="",
        help="the same submit again with this key returns the same task; other work with it is refused",
    )
    submit.add_argument("--correlation-id", default="", help="carried to agents, logs and events")
    submit.add_argument(
        "--max-attempts", type=int, default=0, help="attempts including the first, 1..100 (0, the default: the plane's)"
    )
    submit.add_argument(
        "--non-retryable",
        action="append",
        metavar="CODE",
        help="an attempt failing with this error code ends the task FAILED at once, without retrying (repeatable)",
    )
    submit.add_argument(
        "--initial-backoff", metavar="DURATION", help="wait this long before the second attempt (unset: the plane's)"
    )
    submit.add_argument(
        "--max-backoff", metavar="DURATION", help="the longest wait between attempts (unset: the plane's)"
    )
    submit.add_argument(
        "--backoff-multiplier",
        type=float,
        metavar="FACTOR",
        help="the wait grows by this factor per attempt, 1..100 (unset: the plane's)",
    )
    submit.add_argument(
        "--routing-key", default="", help="tasks with the same key run on the same instance (implies consistent_hash)"
    )
    submit.add_argument("--strategy", choices=_STRATEGIES, help="how an instance is picked (default: the plane's)")
    submit.add_argument("--agent", default="", metavar="NAME", help="run only on agents with this name")
    submit.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="run only on agent instances with this label (repeatable: all must match)",
    )
    submit.add_argument(
        "--metadata", action="append", metavar="KEY=VALUE", help="carried to the agent with the task (repeatable)"
    )
    deadlines = submit.add_argument_group(
        "the task's deadlines", "enforced by the plane, which ends the attempt or task TIMED_OUT (unset: the plane's)"
    )
    deadlines.add_argument(
        "--schedule-to-start",
        metavar="DURATION",
        help="an attempt not started within this long of being queued times out (e.g. 30s, 5m, 2h, 1d)",
    )
    deadlines.add_argument(
        "--start-to-close", metavar="DURATION", help="an attempt still running this long after it started times out"
    )
    deadlines.add_argument(
        "--heartbeat-timeout",
        metavar="DURATION",
        help="an attempt silent this long (no progress, no heartbeat for the task) times out (unset: no check)",
    )
    deadlines.add_argument(
        "--schedule-to-close",
        metavar="DURATION",
        help="the whole task, all attempts included, must end within this long of being submitted",
    )
    _add_wait_options(
        submit,
        timeout_help="with --wait: stop waiting after this long (e.g. 30s, 5m) and exit 1; a limit on this command, "
        "not the task's deadline: the task is not cancelled and keeps running (see --schedule-to-close)",
    )
    submit.set_defaults(run=submit_task)

    get = commands.add_parser("get", help="show a task and its attempts")
    get.add_argument("task_id")
    get.set_defaults(run=get_task)

    watch = commands.add_parser("watch", help="follow a task until it ends (progress bar on a terminal)")
    watch.add_argument("task_id")
    watch.add_argument(
        "--after-sequence",
        type=int,
        default=0,
        metavar="N",
        help="only the events after sequence number N (to resume a watch; default 0: from the first)",
    )
    watch.set_defaults(run=watch_task)

    cancel = commands.add_parser("cancel", help="cancel a task")
    cancel.add_argument("task_id")
    cancel.add_argument(
        "--reason",
        default="",
        help="recorded on the task, and shown to the handler running it (at most 1000 characters)",
    )
    cancel.set_defaults(run=cancel_task)

    resubmit = commands.add_parser(
        "resubmit", help="submit an ended task (e.g. dead-lettered) again as a new task (prints the new id)"
    )
    resubmit.add_argument("task_id")
    _add_wait_options(resubmit)
    resubmit.set_defaults(run=resubmit_task)

    ls = commands.add_parser("ls", help="list tasks, newest first")
    ls.add_argument("--state", choices=_STATES, type=str.lower, help="only tasks in this state")
    ls.add_argument("--capability", default="", help="only tasks for this capability")
    ls.add_argument("--correlation-id", default="", help="only tasks with this correlation id")
    how_many = ls.add_mutually_exclusive_group()
    how_many.add_argument("--limit", type=int, default=50, help="at most this many (1..1000, default 50)")
    how_many.add_argument("--all", action="store_true", help="every task that matches, however many (page by page)")
    ls.set_defaults(run=list_tasks)

    for command in (submit, get, watch, cancel, resubmit, ls):
        add_connection_options(command, top_level=False)
        add_output_option(command)


def _add_wait_options(
    command: argparse.ArgumentParser,
    *,
    timeout_help: str = "with --wait: stop waiting after this long (e.g. 30s, 5m) and exit 1; the task is not "
    "cancelled and keeps running",
) -> None:
    command.add_argument("--wait", action="store_true", help="wait for the task to end and print its output")
    command.add_argument("--timeout", default=None, metavar="DURATION", help=timeout_help)


def _wait_timeout(args: argparse.Namespace) -> float | None:
    """--timeout in seconds (checked before anything is submitted); only with --wait."""
    if args.timeout is None:
        return None
    if not args.wait:
        raise CliError("--timeout needs --wait")
    seconds = duration_argument(args.timeout, "--timeout")
    if seconds <= 0:
        raise CliError("--timeout must be more than 0")
    return seconds


def _failed(task: TaskInfo) -> int:
    why = f": {output.error_text(task.error)}" if task.error is not None else ""
    reason = f" ({task.cancel_reason})" if task.cancel_reason else ""
    output.out(f"error: task {task.id} ended {task.state.value}{reason}{why}", sys.stderr)
    return 1


def _deadline(text: str | None, option: str) -> float | None:
    """A task deadline (or backoff) option in seconds; None when not given (the plane's default)."""
    return None if text is None else duration_argument(text, option)


def _multiplier(factor: float | None) -> float:
    """--backoff-multiplier: 0 when not given (the plane's); the plane checks the range, this only NaN and inf."""
    if factor is None:
        return 0.0
    if not math.isfinite(factor):
        raise CliError(f"--backoff-multiplier must be a finite number: got {factor}")
    return factor


async def submit_task(args: argparse.Namespace) -> int:
    data = json_argument(args.input, "--input")
    int_argument(args.priority, "--priority", -1000, 1000)
    int_argument(args.max_attempts, "--max-attempts", 0, 100)
    labels = key_value_arguments(args.label, "--label")
    metadata = key_value_arguments(args.metadata, "--metadata")
    deadlines = {
        "schedule_to_start": _deadline(args.schedule_to_start, "--schedule-to-start"),
        "start_to_close": _deadline(args.start_to_close, "--start-to-close"),
        "heartbeat_timeout": _deadline(args.heartbeat_timeout, "--heartbeat-timeout"),
        "schedule_to_close": _deadline(args.schedule_to_close, "--schedule-to-close"),
    }
    retry = {
        "initial_backoff": _deadline(args.initial_backoff, "--initial-backoff"),
        "max_backoff": _deadline(args.max_backoff, "--max-backoff"),
        "backoff_multiplier": _multiplier(args.backoff_multiplier),
    }
    timeout = _wait_timeout(args)
    async with client(args, correlation_id=args.correlation_id) as mesh:
        handle = await mesh.submit(
            args.capability,
            data,
            priority=args.priority,
            idempotency_key=args.idempotency_key,
            correlation_id=args.correlation_id,
            metadata=metadata,
            agent_name=args.agent,
            label_selector=labels,
            max_attempts=args.max_attempts,
            non_retryable_error_codes=args.non_retryable or (),
            routing_key=args.routing_key,
            strategy=args.strategy,
            **deadlines,
            **retry,
        )
        if handle.task.state is TaskState.QUEUED:
            await _say_if_nobody_serves(mesh, args.capability, args.agent)
        return await _print_or_wait(mesh, handle, args, timeout)


async def _say_if_nobody_serves(mesh: MeshClient, capability: str, agent_name: str) -> None:
    """A task no connected agent can run waits, silently, up to its schedule-to-start timeout (an hour by
    default): say so on stderr (a typo in the capability or the agent's name, or its agents are down)."""
    agents = await mesh.list_agents(capability=capability)
    if not any(agent.connected_instances for agent in agents if agent.name == agent_name or not agent_name):
        named = f" named {agent_name}" if agent_name else ""
        output.out(
            f"note: no connected agent{named} serves {capability}; the task waits until one does "
            "(up to its schedule-to-start timeout)",
            sys.stderr,
        )


async def resubmit_task(args: argparse.Namespace) -> int:
    timeout = _wait_timeout(args)
    async with client(args) as mesh:
        handle = await mesh.resubmit(args.task_id)
        return await _print_or_wait(mesh, handle, args, timeout)


async def _print_or_wait(mesh: MeshClient, handle: TaskHandle, args: argparse.Namespace, timeout: float | None) -> int:
    """The new task's id (its resource with --output json); with --wait, its output once it has ended."""
    if not args.wait:
        output.out(handle.task.to_json() if args.output == "json" else handle.id)
        return 0
    try:
        task = await mesh.wait(handle.id, timeout=timeout)
    except TaskFailed as failure:
        if args.output == "json":
            output.out(failure.task.to_json())
        return _failed(failure.task)
    except TimeoutError:
        output.out(f"error: task {handle.id} did not end within {timeout:g}s", sys.stderr)
        return 1
    output.out(task.to_json() if args.output == "json" else output.value_text(task.output))
    return 0


async def get_task(args: argparse.Namespace) -> int:
    async with client(args) as mesh:
        task = await mesh.get(args.task_id)
    output.out(task.to_json() if args.output == "json" else output.task_text(task))
    return 0


class _ProgressLine:
    """One line redrawn in place on a terminal."""

    def __init__(self) -> None:
        self._width = 0

    def draw(self, text: str) -> None:
        padded = text.ljust(self._width)
        self._width = len(text)
        sys.stdout.write("\r" + padded)
        sys.stdout.flush()

    def finish(self) -> None:
        if self._width:
            sys.stdout.write("\n")
            sys.stdout.flush()


def _bar_text(event: TaskEvent, progress: float, message: str) -> str:
    return f"{event.task_id} {output.progress_bar(progress)} {event.state.value:<11} {message}".rstrip()


async def watch_task(args: argparse.Namespace) -> int:
    after_sequence = int_argument(args.after_sequence, "--after-sequence", 0, _MAX_INT64)
    live = args.output == "text" and sys.stdout.isatty()
    line = _ProgressLine()
    progress, message = 0.0, ""
    last: TaskEvent | None = None
    async with client(args) as mesh:
        try:
            async with contextlib.aclosing(mesh.watch(args.task_id, after_sequence=after_sequence)) as events:
                async for event in events:
                    last = event
                    if args.output == "json":
                        output.out(event.to_json(indent=None))
                    elif not live:
                        output.out(output.event_text(event))
                    else:
                        if event.type.value == "PROGRESS":
                            progress, message = event.progress, event.message
                        elif event.type.value == "SUCCEEDED":
                            progress, message = 1.0, ""
                        elif event.type.value == "RETRYING":
                            progress, message = 0.0, f"retrying: {output.error_text(event.error)}"
                        line.draw(_bar_text(event, progress, message))
        finally:
            line.finish()
        task = await mesh.get(args.task_id)
    if live and last is not None and task.state is TaskState.SUCCEEDED:
        output.out(output.value_text(task.output))
    if task.state is TaskState.SUCCEEDED:
        return 0
    if not task.state.is_terminal:
        output.out(f"error: the watch of task {task.id} ended early (state {task.state.value})", sys.stderr)
        return 1
    return _failed(task)


async def cancel_task(args: argparse.Namespace) -> int:
    async with client(args) as mesh:
        task = await mesh.cancel(args.task_id, reason=args.reason)
    output.out(task.to_json() if args.output == "json" else f"task {task.id} {task.state.value}")
    return 0


async def list_tasks(args: argparse.Namespace) -> int:
    if not args.all and not 1 <= args.limit <= 1000:
        raise CliError("--limit must be within 1..1000")
    async with client(args) as mesh:

        async def fetch(size: int, token: str = "") -> Page[TaskInfo]:
            return await mesh.list_tasks_page(
                state=args.state,
                capability=args.capability,
                correlation_id=args.correlation_id,
                page_size=size,
                page_token=token,
            )

        pages = [await fetch(_MAX_PAGE if args.all else args.limit)]
        while args.all and pages[-1].next_page_token:  # --all: follow the pages to the last
            pages.append(await fetch(_MAX_PAGE, pages[-1].next_page_token))
    if args.output == "json":
        if len(pages) == 1:
            output.out(pages[0].to_json())
        else:  # the pages as one answer of the same shape, its tasks all of theirs (and no next page)
            tasks = [task for page in pages for task in page.to_dict().get("tasks", [])]
            output.out(json.dumps({"tasks": tasks}, indent=2))
        return 0
    rows = [
        [t.id, t.state.value, t.capability, str(t.attempt), f"{t.progress * 100:.0f}%", output.age(t.create_time)]
        for page in pages
        for t in page.items
    ]
    output.out(output.table(rows, ["ID", "STATE", "CAPABILITY", "ATTEMPT", "PROGRESS", "AGE"]) if rows else "no tasks")
    return 0
