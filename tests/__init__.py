"""keyferry's test suite: ``core/`` (the modules a Mount passes through), ``clouds/<cloud>/``
(each cloud's dialect, backend, fakes and end-to-end runs), ``cli/`` (the CLI and what ships
around it). The fakes and the server harness live in ``keyferry_fakes`` at the repository
root, shared with ``bench/``."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root (examples/, docs/, deploy/ are read from here)."""
