"""How long Mounts wait on a backend that is known to be down, with fail-fast off and on,
and with last-known-good on: Secrets Manager (500s), Secret Manager (UNAVAILABLE) and
Key Vault (503s) in a full outage, one object per Mount, the SDKs' default retries.

    .venv/bin/python bench/outage.py [--mounts 6] [--budget 5] [--clouds aws,gcp,azure]

Each cloud gets a fresh server per run (``mount_timeout_seconds`` = ``--budget``, value
cache off): one Mount while the service is up, then ``--mounts`` Mounts one after the other
in the outage. Reported per run: each Mount's answer time, the calls that reached the fake,
and the answer codes. Everything is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyferry_fakes.harness import DEFAULT_POD, Server, running_server

NS, SA = DEFAULT_POD[0], DEFAULT_POD[3]


@dataclass
class Cloud:
    socket: str
    backend: dict[str, Any]
    params: dict[str, str]
    tokens: Callable[[], dict[str, str]]
    outage: Callable[[], object]
    recover: Callable[[], object]
    calls: Callable[[], int]
    extra: dict[str, Any]


@contextmanager
def aws() -> Iterator[Cloud]:
    from keyferry_fakes.aws_faults import AwsFaults, moto_url, seed_clients, stop_moto
    from keyferry_fakes.kube import FakeKube
    from keyferry_fakes.oidc import ISSUER

    role = "arn:aws:iam::123456789012:role/web"
    proxy = AwsFaults(moto_url())
    proxy.trust(role, NS, SA)
    kube = FakeKube()
    kube.add_service_account(NS, SA, {"eks.amazonaws.com/role-arn": role})
    sm, _ = seed_clients("us-east-1")
    name = f"outage-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="value")
    try:
        yield Cloud(
            socket="aws",
            backend={"aws": {"endpoint_url": proxy.url, "region": "us-east-1"}},
            params={"objects": f"- objectName: {name}\n  objectType: secretsmanager\n"},
            tokens=lambda: {"sts.amazonaws.com": ISSUER.pod_token("sts.amazonaws.com", NS, SA)},
            outage=lambda: proxy.fail("GetSecretValue", "InternalServiceError", 500),
            recover=proxy.clear,
            calls=lambda: proxy.count("GetSecretValue"),
            extra={"kubernetes": kube.settings(), "_delay": proxy.delay},
        )
    finally:
        proxy.close()
        kube.close()
        stop_moto()


@contextmanager
def aws_hang() -> Iterator[Cloud]:
    """Secrets Manager accepts the connection and answers only after 8 s (past the budget)."""
    with aws() as cloud:
        delay: dict[str, float] = cloud.extra.pop("_delay")
        cloud.outage = lambda: delay.update(GetSecretValue=8.0)
        cloud.recover = delay.clear
        yield cloud
        time.sleep(8.5)  # the proxy's held requests go on to moto before it stops


@contextmanager
def gcp() -> Iterator[Cloud]:
    from keyferry_fakes.gcp import google_stack
    from keyferry_fakes.kube import FakeKube

    gsa = "web@my-project.iam.gserviceaccount.com"
    stack = google_stack()
    stack.google.bind(gsa, NS, SA)
    stack.google.allow_project(f"serviceAccount:{gsa}")
    stack.secret_manager.add_version("my-project", "db", b"value")
    kube = FakeKube()
    kube.add_service_account(NS, SA, {"iam.gke.io/gcp-service-account": gsa})
    settings = stack.settings()
    for key in ("retry_initial_seconds", "retry_max_seconds"):
        settings.pop(key)  # the defaults, as deployed
    try:
        yield Cloud(
            socket="gcp",
            backend={"gcp": settings},
            params={
                "secrets": "- {resourceName: projects/my-project/secrets/db/versions/1, path: db}"
            },
            tokens=lambda: stack.token(NS, SA),
            outage=lambda: stack.secret_manager.fail(grpc.StatusCode.UNAVAILABLE, times=10**6),
            recover=stack.secret_manager.faults.clear,
            calls=lambda: len(stack.secret_manager.calls),
            extra={"kubernetes": kube.settings()},
        )
    finally:
        stack.stop()
        kube.close()


@contextmanager
def azure() -> Iterator[Cloud]:
    from keyferry_fakes.azure import TENANT, fake_azure, pod_token

    with tempfile.TemporaryDirectory() as tmp, fake_azure(tmp) as fake:
        fake.entra.federate("app-1", NS, SA)
        fake.vault.grant_reader("kv1", "app-1")
        fake.vault.add_secret("kv1", "db", "value")
        yield Cloud(
            socket="azure",
            backend={"azure": fake.settings()},
            params={
                "keyvaultName": "kv1",
                "tenantID": TENANT,
                "clientID": "app-1",
                "objects": "array:\n  - |\n    objectName: db\n    objectType: secret\n",
            },
            tokens=lambda: {"api://AzureADTokenExchange": pod_token(NS, SA)},
            outage=lambda: fake.vault.inject(503, times=10**6, path="/kv1/"),
            recover=fake.vault.faults.clear,
            calls=lambda: sum(n for k, n in fake.vault.requests.items() if "/kv1/" in k),
            extra={},
        )


CLOUDS = {"aws": aws, "aws-hang": aws_hang, "gcp": gcp, "azure": azure}
RUNS = {
    "fail-fast off": {"fail_fast_threshold": 0},
    "fail-fast on (default)": {},
    "fail-fast + last-known-good": {"stale_if_error_seconds": 300},
}


def run(cloud: Cloud, config: dict[str, Any], mounts: int, budget: float) -> str:
    cloud.recover()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        srv: Server = stack.enter_context(
            running_server(
                Path(tmp),
                providers=cloud.socket,
                backends=cloud.backend,
                cache_ttl_seconds=0,
                mount_timeout_seconds=budget,
                log_level="error",
                **cloud.extra,
                **config,
            )
        )
        srv.mount(cloud.socket, cloud.params, tokens=cloud.tokens())  # up: warm identity
        cloud.outage()
        before = cloud.calls()
        times: list[float] = []
        codes: Counter[str] = Counter()
        for _ in range(mounts):
            start = time.perf_counter()
            try:
                srv.mount(cloud.socket, cloud.params, tokens=cloud.tokens(), timeout=120)
                codes["OK (stale)" if "stale_if_error_seconds" in config else "OK"] += 1
            except grpc.RpcError as err:
                codes[err.code().name] += 1
            times.append(time.perf_counter() - start)
        calls = cloud.calls() - before
    shown = " ".join(f"{t:.2f}" for t in times)
    return (
        f"answers (s): {shown}\n      total {sum(times):.1f} s, "
        f"median {statistics.median(times):.2f} s, {calls} calls reached the service, "
        f"{dict(codes)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--mounts", type=int, default=6)
    parser.add_argument("--budget", type=float, default=5.0)
    parser.add_argument("--clouds", default=",".join(CLOUDS))
    args = parser.parse_args()
    print(f"{args.mounts} Mounts of one object in a full outage, mount budget {args.budget:g} s")
    for name in args.clouds.split(","):
        with CLOUDS[name]() as cloud:
            cloud.extra.pop("_delay", None)
            print(f"\n{name}")
            for label, config in RUNS.items():
                print(f"  {label}: {run(cloud, config, args.mounts, args.budget)}")


if __name__ == "__main__":
    main()
