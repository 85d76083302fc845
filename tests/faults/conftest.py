"""The fault-injection suite: each scenario's figures, printed at the end of the run."""

from __future__ import annotations

import pytest
from fault_load import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault-injection figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
