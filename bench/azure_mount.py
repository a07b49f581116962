"""Mount latency over the ``azure`` socket against the local Key Vault and Entra ID
fakes, and token requests per 100 mounts of one workload identity.

    .venv/bin/python bench/azure_mount.py [--mounts 100] [--concurrency 16]

Runs the real server on Unix sockets (as the driver calls it) and the fake Key
Vault and Entra token endpoint over HTTPS (local CA), all on 127.0.0.1, with the
real azure-identity and azure-keyvault clients. The value cache is off, so every
mount reaches Key Vault; only the workload-identity token and the clients are
reused. The class mounts a secret, a key and a PKCS#12 certificate as PEM.
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

from cryptography.hazmat.primitives.serialization import Encoding

from keyferry_fakes.azure import TENANT, fake_azure, pod_token
from keyferry_fakes.azure_certs import chain, jwk, new_key
from keyferry_fakes.harness import DEFAULT_POD, running_server

OBJECTS = """array:
  - |
    objectName: db-password
    objectType: secret
  - |
    objectName: signing
    objectType: key
  - |
    objectName: web
    objectType: secret
    objectAlias: web.pem
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--mounts", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    ns, sa = DEFAULT_POD[0], DEFAULT_POD[3]
    params = {
        "keyvaultName": "bench-kv",
        "tenantID": TENANT,
        "clientID": "bench-app",
        "objects": OBJECTS,
    }
    with tempfile.TemporaryDirectory() as tmp, fake_azure(tmp) as fake:
        fake.entra.federate("bench-app", ns, sa)
        fake.vault.grant_reader("bench-kv", "bench-app")
        fake.vault.add_secret("bench-kv", "db-password", "s3cret-db-password")
        fake.vault.add_key("bench-kv", "signing", jwk(new_key("p256")))
        ch = chain("rsa")
        fake.vault.add_certificate(
            "bench-kv",
            "web",
            ch.leaf.public_bytes(Encoding.DER),
            secret_value=ch.pfx_value([ch.root, ch.inter]),
        )
        with running_server(
            Path(tmp),
            providers="azure",
            backends={"azure": fake.settings()},
            cache_ttl_seconds=0,
            log_level="warning",
        ) as srv:

            def one() -> float:
                # kubelet sends a fresh token on every NodePublish.
                tokens = {"api://AzureADTokenExchange": pod_token(ns, sa)}
                start = time.perf_counter()
                resp = srv.mount("azure", params, tokens=tokens)
                assert len(resp.files) == 3
                return time.perf_counter() - start

            first = one()  # cold: challenge, token exchange, client creation
            sequential = [one() for _ in range(args.mounts - 1)]
            tokens_first_batch = fake.entra.token_requests
            with ThreadPoolExecutor(args.concurrency) as pool:
                start = time.perf_counter()
                burst = list(pool.map(lambda _: one(), range(args.mounts)))
                burst_wall = time.perf_counter() - start
        token_total = fake.entra.token_requests
        vault_calls = sum(fake.vault.requests.values())

    total = 2 * args.mounts
    ms = 1000.0
    print(f"mounts: {total} of one workload identity ({ns}/{sa} -> bench-app)")
    print(
        f"token requests per 100 mounts (first {args.mounts}, cold start included): "
        f"{100 * tokens_first_batch / args.mounts:.0f}"
    )
    print(f"token requests over all {total} mounts: {token_total}")
    print(
        f"Key Vault HTTP requests: {vault_calls} (3 objects per mount, value cache off; "
        "includes the one 401 challenge per client)"
    )
    print(f"first (cold) mount: {first * ms:.1f} ms")
    print(
        f"sequential mount latency over the socket (warm): "
        f"mean {statistics.mean(sequential) * ms:.1f} ms, "
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
