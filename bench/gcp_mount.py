"""Mount latency over the ``gcp`` socket against the local Google fakes, and
token exchanges per 100 mounts of one Kubernetes service account.

    .venv/bin/python bench/gcp_mount.py [--mounts 100] [--concurrency 16]

Runs the real server on Unix sockets (as the driver calls it), the fake Secret
Manager over gRPC, fake STS + IAM Credentials over HTTP and a fake Kubernetes
API, all on 127.0.0.1. The value cache is off, so every mount reaches Secret
Manager; only the exchanged token and the ServiceAccount lookup are reused.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyferry_fakes.gcp import google_stack
from keyferry_fakes.harness import DEFAULT_POD, running_server
from keyferry_fakes.kube import FakeKube

SECRETS = """
- resourceName: "projects/my-project/secrets/db/versions/latest"
  path: "db/password"
- resourceName: "projects/my-project/locations/us-east1/secrets/api/versions/1"
  path: "api-key"
  mode: 0400
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mounts", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    ns, ksa = DEFAULT_POD[0], DEFAULT_POD[3]
    gsa = "web@my-project.iam.gserviceaccount.com"
    stack = google_stack()
    stack.secret_manager.add_version("my-project", "db", b"s3cret-db-password")
    stack.regional["us-east1"].add_version("my-project", "api", b"s3cret-api-key")
    stack.google.bind(gsa, ns, ksa)  # roles/iam.workloadIdentityUser on the GSA
    stack.secret_manager.allow("my-project", "db", f"serviceAccount:{gsa}")  # secretAccessor
    stack.regional["us-east1"].allow("my-project", "api", f"serviceAccount:{gsa}")
    kube = FakeKube()
    kube.add_service_account(ns, ksa, {"iam.gke.io/gcp-service-account": gsa})
    params = {"secrets": SECRETS}

    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(
            Path(tmp),
            providers="gcp",
            backends={"gcp": stack.settings()},
            kubernetes=kube.settings(),
            cache_ttl_seconds=0,
            log_level="warning",
        ) as srv,
    ):

        def one() -> float:
            start = time.perf_counter()
            resp = srv.mount("gcp", params, tokens=stack.token(ns, ksa))
            assert len(resp.files) == 2
            return time.perf_counter() - start

        first = one()  # cold: ServiceAccount lookup, STS exchange, impersonation, channels
        sequential = [one() for _ in range(args.mounts - 1)]
        sts_first_batch = stack.google.counts["sts"]
        with ThreadPoolExecutor(args.concurrency) as pool:
            start = time.perf_counter()
            burst = list(pool.map(lambda _: one(), range(args.mounts)))
            burst_wall = time.perf_counter() - start

    total_mounts = 2 * args.mounts
    counts = stack.google.counts
    stack.stop()
    per100 = 100 * sts_first_batch / args.mounts
    ms = 1000.0
    print(f"mounts: {total_mounts} of one service account ({ns}/{ksa} -> {gsa})")
    print(
        f"token exchanges per 100 mounts (first {args.mounts}, cold start included): "
        f"{per100:.0f} STS exchange(s)"
    )
    print(
        f"token exchanges over all {total_mounts} mounts: STS {counts['sts']}, "
        f"IAM generateAccessToken {counts['iam']}"
    )
    print(f"ServiceAccount lookups: {sum(kube.requests.values())}")
    print(
        f"Secret Manager calls: {counts['secretmanager']} (2 objects per mount; value cache "
        "off, concurrent identical reads coalesced)"
    )
    print(f"first (cold) mount: {first * ms:.1f} ms")
    mean = statistics.mean(sequential) * ms
    print(
        f"sequential mount latency over the socket (warm): mean {mean:.1f} ms, "
        f"p50 {percentile(sequential, 0.5) * ms:.1f} ms, "
        f"p95 {percentile(sequential, 0.95) * ms:.1f} ms, "
        f"max {max(sequential) * ms:.1f} ms"
    )
    print(
        f"burst of {args.mounts} at concurrency {args.concurrency}: "
        f"p50 {percentile(burst, 0.5) * ms:.1f} ms, p95 {percentile(burst, 0.95) * ms:.1f} ms, "
        f"{args.mounts / burst_wall:.0f} mounts/s"
    )


if __name__ == "__main__":
    main()
