"""The core tests' count of generated MountRequests, reported at the end of the run."""

from __future__ import annotations

from collections import Counter

import pytest

FUZZ_COUNT = pytest.StashKey["Counter[str]"]()


@pytest.fixture(scope="session")
def fuzz_count(pytestconfig: pytest.Config) -> Counter[str]:
    """Generated MountRequests by where they went (``in-process``, ``socket``)."""
    return pytestconfig.stash.setdefault(FUZZ_COUNT, Counter())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    counts = config.stash.get(FUZZ_COUNT, None)
    if counts:
        parts = ", ".join(f"{n} {where}" for where, n in sorted(counts.items()))
        terminalreporter.write_line(
            f"fuzz: {sum(counts.values())} generated MountRequests ({parts})"
        )
