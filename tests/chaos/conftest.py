from __future__ import annotations

import json

import pytest

from tests.chaos.report import REPORTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for report in REPORTS:
        terminalreporter.write_sep("-", f"chaos report ({report['database']})")
        terminalreporter.write_line(json.dumps(report, indent=2))
