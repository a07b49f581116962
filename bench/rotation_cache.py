"""The node cache during a rotation burst: cloud API calls with and without it.

Run: ``.venv/bin/python bench/rotation_cache.py [--pods 40] [--secrets 5]``

A rollout or a republish wave: ``--pods`` pods of one service account on one node
mount the same class (``--secrets`` Secrets Manager secrets) at once, 8 at a time,
over the ``aws`` socket against moto. Run twice in one process: with the value cache
off (``cache_ttl_seconds: 0``, what the official providers do) and on (30 s, the
default). Values are cached per identity, so every pod here shares one entry; with
the cache off, identical mounts in flight at the same moment still share their calls.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def burst(ttl: float, pods: int, names: list[str]) -> tuple[int, float]:
    from keyferry_fakes.aws_faults import AwsFaults, moto_url
    from keyferry_fakes.harness import DEFAULT_POD, running_server
    from keyferry_fakes.kube import FakeKube
    from keyferry_fakes.oidc import ISSUER

    role = "arn:aws:iam::123456789012:role/bench"
    ns, _, _, sa = DEFAULT_POD
    proxy = AwsFaults(moto_url())
    proxy.trust(role, ns, sa)  # the role's IRSA trust policy
    kube = FakeKube()
    kube.add_service_account(ns, sa, {"eks.amazonaws.com/role-arn": role})
    objects = json.dumps([{"objectName": n, "objectType": "secretsmanager"} for n in names])
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            running_server(
                Path(tmp),
                providers="aws",
                backends={"aws": {"endpoint_url": proxy.url, "region": "us-east-1"}},
                kubernetes=kube.settings(),
                cache_ttl_seconds=ttl,
                log_level="warning",
            ) as srv,
        ):

            def one(i: int) -> int:
                pod = (ns, f"web-{i}", str(uuid.uuid4()), sa)
                token = ISSUER.pod_token("sts.amazonaws.com", ns, sa, pod=pod[1])
                resp = srv.mount(
                    "aws", {"objects": objects}, pod=pod, tokens={"sts.amazonaws.com": token}
                )
                return len(resp.files)

            start = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                assert all(n == len(names) for n in pool.map(one, range(pods)))
            wall = time.perf_counter() - start
        calls = sum(1 for r in proxy.requests if r.operation != "AssumeRoleWithWebIdentity")
        assert not proxy.refusals, proxy.refusals
    finally:
        proxy.close()
        kube.close()
    return calls, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=40)
    parser.add_argument("--secrets", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from keyferry_fakes.aws_faults import seed_clients

    sm, _ = seed_clients("us-east-1")
    prefix = f"rot-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}/s{i}" for i in range(args.secrets)]
    for n in names:
        sm.create_secret(Name=n, SecretString="v-" + n)
    off_calls, off_wall = burst(0, args.pods, names)
    on_calls, on_wall = burst(30, args.pods, names)
    print(f"rotation burst: {args.pods} pods of one service account, {args.secrets} secrets each")
    print(f"{'':28}{'cache off':>12}{'cache on':>12}")
    print(f"{'Secrets Manager calls':28}{off_calls:>12}{on_calls:>12}")
    print(f"{'burst wall time (s)':28}{off_wall:>12.2f}{on_wall:>12.2f}")
    print(f"ratio: {off_calls / max(on_calls, 1):.0f}x fewer cloud API calls with the node cache")
    official = args.pods * args.secrets
    print(
        f"for reference (computed, not measured): one GetSecretValue per secret per pod, as the "
        f"official provider does, is {official} calls"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
