"""Fixtures the whole suite shares: the fake clouds, the fake Kubernetes API and a
keyferry server on real sockets.

Each fake runs once per session (``_``-prefixed, session-scoped) and every test gets it
through a function-scoped fixture that first calls its ``reset()``: objects, grants,
issued tokens and credentials, counters and injected faults go back to what a new fake
holds, so a test sees exactly what it would see with a fake of its own; only the server
(its port, URL and CA) is reused. moto keeps its data across tests, as before: tests
name what they create uniquely. A folder or module that needs more (a ServiceAccount,
a trust policy, a grant) overrides the fixture under the same name and asks for this
one, e.g. ``def kube(kube: FakeKube) -> FakeKube``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from keyferry_fakes.aws_faults import AwsFaults, moto_url, stop_moto
from keyferry_fakes.azure import FakeAzure, fake_azure
from keyferry_fakes.gcp import GoogleStack, google_stack
from keyferry_fakes.harness import Server, running_server
from keyferry_fakes.kube import FakeKube


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_moto()  # started by the first test that needs it; a no-op otherwise
    # In a pytest-xdist worker: hand this worker's count of generated MountRequests to the
    # controller (pytest_testnodedown below adds them up).
    output: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    counts = session.config.stash.get(FUZZ_COUNT, None)
    if output is not None and counts:
        output["fuzz_count"] = dict(counts)


# -- the Kubernetes API -----------------------------------------------------------------


@pytest.fixture(scope="session")
def _kube_api() -> Iterator[FakeKube]:
    fake = FakeKube()
    yield fake
    fake.close()


@pytest.fixture
def kube(_kube_api: FakeKube) -> FakeKube:
    """The strict fake Kubernetes API over HTTP, with no objects; ``settings()`` is the
    server configuration's ``kubernetes`` section for it."""
    _kube_api.reset()
    return _kube_api


@pytest.fixture(scope="session")
def _kube_api_tls() -> Iterator[FakeKube]:
    fake = FakeKube(tls=True)
    yield fake
    fake.close()


@pytest.fixture
def tls_kube(_kube_api_tls: FakeKube) -> FakeKube:
    """The strict fake Kubernetes API over HTTPS (its CA in ``ca_file``), no objects."""
    _kube_api_tls.reset()
    return _kube_api_tls


# -- the clouds -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def _aws_proxy() -> Iterator[AwsFaults]:
    proxy = AwsFaults(moto_url())
    yield proxy
    proxy.close()


@pytest.fixture
def aws_proxy(_aws_proxy: AwsFaults) -> AwsFaults:
    """STS, Secrets Manager and SSM: moto behind the strict, recording, fault-injecting
    proxy; no trust policies, credentials, rules or records yet."""
    _aws_proxy.reset()
    return _aws_proxy


@pytest.fixture(scope="session")
def _google() -> Iterator[GoogleStack]:
    stack = google_stack()
    yield stack
    stack.stop()


@pytest.fixture
def google(_google: GoogleStack) -> GoogleStack:
    """Google's STS, IAM Credentials, OAuth2 and metadata endpoints, Secret Manager
    (global, us-east1, europe-west4) and Parameter Manager (global, us-east1), with no
    content, IAM policies or issued tokens."""
    _google.reset()
    return _google


@pytest.fixture(scope="session")
def _azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAzure]:
    with fake_azure(str(tmp_path_factory.mktemp("azure"))) as fake:
        yield fake


@pytest.fixture
def azure(_azure: FakeAzure) -> FakeAzure:
    """Entra ID and Key Vault over HTTPS (their CA in ``ca_path``), with no applications,
    vault content, grants or issued tokens; Key Vault answers denials as RBAC does."""
    _azure.reset()
    return _azure


# -- keyferry -----------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(providers=..., backends=..., **config)`` starts a keyferry server on Unix
    sockets under this test's ``tmp_path`` (``keyferry_fakes.harness.running_server``)
    and stops it when the test ends."""
    with ExitStack() as started:

        def start(**settings: Any) -> Server:
            return started.enter_context(running_server(tmp_path, **settings))

        yield start


# -- the count of generated MountRequests (tests/core/test_fuzz.py), reported at the end ---
# Here, not in tests/core/conftest.py: under pytest-xdist (make unit) the controller loads
# this file only. Each worker counts its own and hands the count over when it finishes
# (pytest_sessionfinish above).

FUZZ_COUNT = pytest.StashKey["Counter[str]"]()


@pytest.fixture(scope="session")
def fuzz_count(pytestconfig: pytest.Config) -> Counter[str]:
    """Generated MountRequests by where they went (``in-process``, ``socket``)."""
    return pytestconfig.stash.setdefault(FUZZ_COUNT, Counter())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the xdist controller: add up what a finished worker counted."""
    counts = getattr(node, "workeroutput", {}).get("fuzz_count")
    if counts:
        node.config.stash.setdefault(FUZZ_COUNT, Counter()).update(counts)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    counts = config.stash.get(FUZZ_COUNT, None)
    if counts:
        parts = ", ".join(f"{n} {where}" for where, n in sorted(counts.items()))
        terminalreporter.write_line(
            f"fuzz: {sum(counts.values())} generated MountRequests ({parts})"
        )
