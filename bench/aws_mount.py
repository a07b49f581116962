"""AWS mount benchmark: a 25-secret Secrets Manager mount over the ``aws`` socket
against moto, with BatchGetSecretValue (batched) and with GetSecretValue per
secret (unbatched), side by side: AWS API calls per mount and mount latency.

Run: ``.venv/bin/python bench/aws_mount.py [--secrets 25] [--mounts 30]``

Everything runs on 127.0.0.1: moto in server mode behind a counting proxy, a
fake Kubernetes API (for the IRSA role annotation), and a real keyferry server
answering driver-shaped MountRequests over gRPC on a Unix socket. The value
cache is off (cache_ttl_seconds: 0) so every mount reads every secret; IRSA
credentials are cached as in production (one STS call for the whole run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(mode: str, secrets: int, mounts: int, names: list[str]) -> dict[str, Any]:
    from keyferry_fakes.aws_faults import AwsFaults, moto_url
    from keyferry_fakes.harness import DEFAULT_POD, running_server
    from keyferry_fakes.kube import FakeKube
    from keyferry_fakes.oidc import ISSUER

    role = "arn:aws:iam::123456789012:role/bench"
    ns, pod, _, sa = DEFAULT_POD
    proxy = AwsFaults(moto_url())
    proxy.trust(role, ns, sa)  # the role's IRSA trust policy
    kube = FakeKube()
    kube.add_service_account(ns, sa, {"eks.amazonaws.com/role-arn": role})
    settings = {
        "endpoint_url": proxy.url,
        "region": "us-east-1",
        "batch_get_secret_value": mode == "batched",
    }
    objects = json.dumps([{"objectName": n, "objectType": "secretsmanager"} for n in names])
    latencies: list[float] = []
    calls: list[int] = []
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            running_server(
                Path(tmp),
                providers="aws",
                backends={"aws": settings},
                kubernetes=kube.settings(),
                cache_ttl_seconds=0,
                log_level="warning",
            ) as srv,
        ):
            tokens = {"sts.amazonaws.com": ISSUER.pod_token("sts.amazonaws.com", ns, sa, pod=pod)}
            srv.mount("aws", {"objects": objects}, tokens=tokens)  # warm-up: STS, clients
            for _ in range(mounts):
                before = len(proxy.requests)
                start = time.perf_counter()
                resp = srv.mount("aws", {"objects": objects}, tokens=tokens)
                latencies.append(time.perf_counter() - start)
                calls.append(len(proxy.requests) - before)
                assert len(resp.files) == secrets
        ops = [r.operation for r in proxy.requests]
        assert not proxy.refusals, proxy.refusals
    finally:
        proxy.close()
        kube.close()
    return {
        "calls": statistics.median(calls),
        "ops": sorted({o for o in ops if o != "AssumeRoleWithWebIdentity"}),
        "sts": ops.count("AssumeRoleWithWebIdentity"),
        "p50": statistics.median(latencies) * 1000,
        "p90": statistics.quantiles(latencies, n=10)[-1] * 1000 if len(latencies) > 1 else 0.0,
        "mean": statistics.fmean(latencies) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=25)
    parser.add_argument("--mounts", type=int, default=30)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from keyferry_fakes.aws_faults import seed_clients

    sm, _ = seed_clients("us-east-1")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}/secret-{i:02d}" for i in range(args.secrets)]
    for name in names:
        sm.create_secret(Name=name, SecretString=json.dumps({"name": name, "pad": "x" * 200}))

    results = {m: run(m, args.secrets, args.mounts, names) for m in ("batched", "unbatched")}
    b, u = results["batched"], results["unbatched"]
    print(
        f"{args.secrets}-secret mount over the aws socket against moto, {args.mounts} mounts each"
    )
    print(f"{'':34}{'batched':>14}{'unbatched':>14}")
    print(f"{'AWS API calls per mount':34}{b['calls']:>14.0f}{u['calls']:>14.0f}")
    print(f"{'  batched operations':34}{', '.join(b['ops'])}")
    print(f"{'  unbatched operations':34}{', '.join(u['ops'])}")
    print(f"{'STS calls (whole run)':34}{b['sts']:>14}{u['sts']:>14}")
    print(f"{'mount latency p50 (ms)':34}{b['p50']:>14.1f}{u['p50']:>14.1f}")
    print(f"{'mount latency p90 (ms)':34}{b['p90']:>14.1f}{u['p90']:>14.1f}")
    print(f"{'mount latency mean (ms)':34}{b['mean']:>14.1f}{u['mean']:>14.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
