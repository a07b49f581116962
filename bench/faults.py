"""Fault table: what a Mount gets, how many calls reach the endpoint and how long the
answer takes while one cloud endpoint throttles, fails, resets, is slow or is down.

    .venv/bin/python bench/faults.py [--budget 5] [--clouds aws,gcp,azure] [--faults ...]

One keyferry server per cloud with its default retry settings and
``mount_timeout_seconds: <budget>``, against the fakes on 127.0.0.1 (moto behind the
AWS proxy and the Pod Identity agent; Google's gRPC and HTTP fakes; Entra ID and Key
Vault over HTTPS). For every endpoint and fault (``keyferry_fakes.faults.FAULTS``,
Retry-After and slow first bytes of 1 s) a pod of its own ServiceAccount mounts two
objects twice: once in a single gRPC call (what keyferry answers), once as the CSI
driver calls (its gRPC service config retries UNAVAILABLE three times, about a second
apart: what the pod waits for). Calls are counted by the fakes, each run by a fresh pod
so no credentials are cached.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keyferry_fakes.aws_agent import PodIdentityAgent  # noqa: E402
from keyferry_fakes.aws_faults import AwsFaults, moto_url, seed_clients, stop_moto  # noqa: E402
from keyferry_fakes.azure import TENANT, fake_azure, pod_token  # noqa: E402
from keyferry_fakes.faults import (  # noqa: E402
    AWS_JSON,
    AWS_QUERY,
    FAULTS,
    GRPC,
    HTTP,
    Faults,
    Wire,
    arm,
)
from keyferry_fakes.gcp import google_stack  # noqa: E402
from keyferry_fakes.harness import Server, driver_request, running_server  # noqa: E402
from keyferry_fakes.kube import FakeKube  # noqa: E402
from keyferry_fakes.oidc import ISSUER  # noqa: E402
from provider._proto.v1alpha1 import service_pb2_grpc as pb_grpc  # noqa: E402

NS = "team-a"
DRIVER_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": "v1alpha1.CSIDriverProvider"}],
            "waitForReady": True,
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "1s",
                "maxBackoff": "10s",
                "backoffMultiplier": 1.1,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
"""What the Secrets Store CSI driver dials its providers with (docs/protocol.md §4.3)."""
DOES = {
    "throttled": "retries, jittered backoff",
    "throttled_retry_after": "waits the Retry-After (1 s), retries",
    "retry_after_past_budget": "no retry: Retry-After 600 s is past the budget",
    "burst_5xx": "retries, jittered backoff",
    "reset": "retries",
    "slow": "waits (1 s, within the budget)",
    "outage": "retries up to the most attempts, then gives up",
    "slow_past_budget": "gives up when the budget ends",
}


@dataclass
class Endpoint:
    faults: Faults
    wire: Wire
    where: str
    seen: Callable[[], int]


@dataclass
class Mount:
    params: dict[str, str]
    tokens: dict[str, str]
    sa: str


@dataclass
class Cloud:
    socket: str
    server: Server
    endpoints: dict[str, Endpoint]
    new_pod: Callable[[str], Mount]
    """A pod of a new ServiceAccount, with two objects, for an endpoint."""


@contextmanager
def aws(tmp: Path, budget: float) -> Iterator[Cloud]:
    role, region = "arn:aws:iam::123456789012:role/bench", "us-west-2"
    with ExitStack() as stack:
        stack.callback(stop_moto)  # last: after the agent, which asks moto for credentials
        proxy = AwsFaults(moto_url())
        stack.callback(proxy.close)
        kube = FakeKube()
        stack.callback(kube.close)
        agent = PodIdentityAgent(proxy)
        stack.callback(agent.close)
        settings = {
            "endpoint_url": proxy.url,
            "region": region,
            "pod_identity": {"ipv4_url": agent.url},
        }
        server = stack.enter_context(serve(tmp, "aws", {"aws": settings}, kube.settings(), budget))
        sm, ssm = seed_clients(region)

        def new_pod(endpoint: str) -> Mount:
            sa = f"sa-{uuid.uuid4().hex[:8]}"
            kube.add_service_account(NS, sa, {"eks.amazonaws.com/role-arn": role})
            proxy.trust(role, NS, sa)
            agent.associate(NS, sa, role)
            ssm_pod = endpoint == "SSM"
            kind = "ssmparameter" if ssm_pod else "secretsmanager"
            names = [f"/{sa}/a", f"/{sa}/b"] if ssm_pod else [f"{sa}-a", f"{sa}-b"]
            for name in names:
                if ssm_pod:
                    ssm.put_parameter(Name=name, Value="v", Type="String")
                else:
                    sm.create_secret(Name=name, SecretString="v")
            params = {
                "objects": "".join(f"- {{objectName: {n}, objectType: {kind}}}\n" for n in names)
            }
            audience = "sts.amazonaws.com"
            if endpoint == "Pod Identity agent":
                params["usePodIdentity"] = "true"
                audience = "pods.eks.amazonaws.com"
            return Mount(params, {audience: ISSUER.pod_token(audience, NS, sa)}, sa)

        def op(name: str) -> Endpoint:
            return Endpoint(
                proxy.faults,
                AWS_QUERY if name.startswith("Assume") else AWS_JSON,
                name,
                lambda: proxy.count(name),
            )

        yield Cloud(
            "aws",
            server,
            {
                "Secrets Manager": op("BatchGetSecretValue"),
                "SSM": op("GetParameters"),
                "STS": op("AssumeRoleWithWebIdentity"),
                "Pod Identity agent": Endpoint(agent.faults, HTTP, "", lambda: len(agent.seen)),
            },
            new_pod,
        )


@contextmanager
def gcp(tmp: Path, budget: float) -> Iterator[Cloud]:
    with ExitStack() as stack:
        google = google_stack()
        stack.callback(google.stop)
        kube = FakeKube()
        stack.callback(kube.close)
        # The default retry settings, not the stack's fast ones for tests.
        settings = google.settings(retry_initial_seconds=0.25, retry_max_seconds=4.0)
        server = stack.enter_context(serve(tmp, "gcp", {"gcp": settings}, kube.settings(), budget))
        sm, pm = google.secret_manager, google.parameter_manager

        def new_pod(endpoint: str) -> Mount:
            ksa = f"sa-{uuid.uuid4().hex[:8]}"
            gsa = f"{ksa}@my-project.iam.gserviceaccount.com"
            kube.add_service_account(NS, ksa, {"iam.gke.io/gcp-service-account": gsa})
            google.google.bind(gsa, NS, ksa)
            google.google.allow_project(f"serviceAccount:{gsa}")
            names = []
            for part in ("a", "b"):
                if endpoint == "Parameter Manager":
                    pm.add_version("my-project", f"{ksa}-{part}", "v1", b"{}")
                    names.append(
                        f"projects/my-project/locations/global/parameters/{ksa}-{part}/versions/v1"
                    )
                else:
                    sm.add_version("my-project", f"{ksa}-{part}", b"v")
                    names.append(f"projects/my-project/secrets/{ksa}-{part}/versions/latest")
            text = "".join(f"- {{resourceName: {n}, path: f{i}}}\n" for i, n in enumerate(names))
            return Mount({"secrets": text}, google.token(NS, ksa), ksa)

        ident = google.identity
        yield Cloud(
            "gcp",
            server,
            {
                "Secret Manager": Endpoint(sm.faults, GRPC, "", lambda: len(sm.calls)),
                "Parameter Manager": Endpoint(pm.faults, GRPC, "", lambda: len(pm.calls)),
                "STS": Endpoint(ident.faults, HTTP, "sts", lambda: ident.requests["sts"]),
                "IAM Credentials": Endpoint(
                    ident.faults, HTTP, "iam", lambda: ident.requests["iam"]
                ),
            },
            new_pod,
        )


@contextmanager
def azure(tmp: Path, budget: float) -> Iterator[Cloud]:
    app, vault = "bench-app", "kv-bench"
    with ExitStack() as stack:
        fake = stack.enter_context(fake_azure(str(tmp)))
        kube = FakeKube()
        stack.callback(kube.close)
        server = stack.enter_context(
            serve(tmp, "azure", {"azure": fake.settings()}, kube.settings(), budget)
        )
        fake.vault.grant_reader(vault, app)

        def new_pod(endpoint: str) -> Mount:
            sa = f"sa-{uuid.uuid4().hex[:8]}"
            fake.entra.federate(app, NS, sa)
            names = [f"{sa}-a", f"{sa}-b"]
            for name in names:
                fake.vault.add_secret(vault, name, "v")
            objects = "array:\n" + "".join(
                f"  - |\n    objectName: {n}\n    objectType: secret\n" for n in names
            )
            params = {
                "keyvaultName": vault,
                "tenantID": TENANT,
                "clientID": app,
                "objects": objects,
            }
            return Mount(params, {"api://AzureADTokenExchange": pod_token(NS, sa)}, sa)

        kv, entra = fake.vault, fake.entra
        yield Cloud(
            "azure",
            server,
            {
                "Key Vault": Endpoint(
                    kv.faults, HTTP, "/secrets/", lambda: sum(kv.with_token.values())
                ),
                "Entra ID": Endpoint(entra.faults, HTTP, "", lambda: entra.token_requests),
            },
            new_pod,
        )


@contextmanager
def serve(
    tmp: Path, socket: str, backends: dict[str, Any], kube: dict[str, Any], budget: float
) -> Iterator[Server]:
    with running_server(
        tmp / socket,
        providers=socket,
        backends=backends,
        kubernetes=kube,
        cache_ttl_seconds=0,
        mount_timeout_seconds=budget,
        log_level="error",
    ) as server:
        yield server


def mount_once(cloud: Cloud, m: Mount, *, driver: bool) -> tuple[str, float]:
    """The answer (``OK`` or the status code) and the seconds it took."""
    request = driver_request(m.params, tokens=m.tokens, pod=(NS, "web-0", "uid-0", m.sa))
    options = []
    if driver:
        options = [
            ("grpc.service_config", json.dumps(DRIVER_SERVICE_CONFIG)),
            ("grpc.enable_retries", 1),
        ]
    start = time.perf_counter()
    try:
        with grpc.insecure_channel(
            f"unix:{cloud.server.socket(cloud.socket)}", options=options
        ) as ch:
            pb_grpc.CSIDriverProviderStub(ch).Mount(request, timeout=120)
        answer = "OK"
    except grpc.RpcError as exc:
        answer = exc.code().name
    return answer, time.perf_counter() - start


def run(cloud: Cloud, endpoint: str, fault: str, *, driver: bool) -> tuple[str, int, float]:
    e = cloud.endpoints[endpoint]
    m = cloud.new_pod(endpoint)
    arm(e.faults, fault, e.wire, e.where, retry_after=1.0, slow=1.0)
    before = e.seen()
    answer, seconds = mount_once(cloud, m, driver=driver)
    calls = e.seen() - before
    e.faults.clear()
    return answer, calls, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=5.0, help="mount_timeout_seconds")
    parser.add_argument("--clouds", default="aws,gcp,azure")
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    clouds = {"aws": aws, "gcp": gcp, "azure": azure}
    faults = args.faults.split(",")
    print(f"mount_timeout_seconds: {args.budget:g}; two objects per Mount; default retry settings")
    print("cells: answer, calls that reached the endpoint, time to answer")
    for name in args.clouds.split(","):
        with tempfile.TemporaryDirectory() as tmp, clouds[name](Path(tmp), args.budget) as cloud:
            warm = cloud.new_pod(next(iter(cloud.endpoints)))
            mount_once(cloud, warm, driver=False)  # SDK imports, clients
            rows: dict[bool, dict[str, list[str]]] = {False: {}, True: {}}
            for fault in faults:
                for driver in (False, True):
                    rows[driver][fault] = []
                    for endpoint in cloud.endpoints:
                        answer, calls, seconds = run(cloud, endpoint, fault, driver=driver)
                        rows[driver][fault].append(f"{answer} · {calls} · {seconds:.2f} s")
            for driver in (False, True):
                how = (
                    "as the CSI driver calls (UNAVAILABLE tried twice more)"
                    if driver
                    else "one call"
                )
                print(f"\n{name}, {how}\n")
                heads = " | ".join(cloud.endpoints)
                print(f"| fault | keyferry does | {heads} |")
                print("|---|---|" + "---|" * len(cloud.endpoints))
                for fault, cells in rows[driver].items():
                    print(f"| {fault} | {DOES[fault]} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
