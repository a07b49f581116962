"""Kubernetes client cost for keyferry's three GET calls, side by side in one run.

Each client runs in a fresh subprocess against the same strict fake API server
(bearer token required): import time, peak RSS after import and after the calls,
and the latency of 200 sequential ServiceAccount GETs plus 50 concurrent ones.
``kubernetes`` (the official synchronous client, run on an executor as keyferry
did before) is measured only when installed: ``pip install kubernetes``.

    .venv/bin/python bench/kube_client.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keyferry_fakes.kube import FakeKube  # noqa: E402

CHILD = r"""
import asyncio, json, resource, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
which, url, token_file = sys.argv[1:4]
t0 = time.perf_counter()
if which == "lightkube":
    from provider.config import KubeConfig
    from provider.kube import KubeClient
    import lightkube.resources.core_v1
else:
    from kubernetes import client
import_ms = (time.perf_counter() - t0) * 1000
rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

async def main():
    if which == "lightkube":
        kc = KubeClient(KubeConfig(api_url=url, token_file=token_file, insecure=True,
                                   cache_seconds=0))
        from lightkube.resources.core_v1 import ServiceAccount
        api = kc._api()  # past keyferry's lookup cache, which would coalesce the burst
        get = lambda: api.get(ServiceAccount, "web", namespace="team-a")
    else:
        cfg = client.Configuration()
        cfg.host = url
        cfg.api_key = {"authorization": open(token_file).read().strip()}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        api = client.CoreV1Api(client.ApiClient(cfg))
        pool = ThreadPoolExecutor(16)
        loop = asyncio.get_running_loop()
        get = lambda: loop.run_in_executor(
            pool, api.read_namespaced_service_account, "web", "team-a")
    await get()
    lat = []
    for _ in range(200):
        t = time.perf_counter()
        await get()
        lat.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    await asyncio.gather(*(get() for _ in range(50)))
    burst = (time.perf_counter() - t) * 1000
    return statistics.median(lat), burst

p50, burst = asyncio.run(main())
print(json.dumps({"import_ms": import_ms, "rss_import": rss_import,
    "rss_after": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "p50_ms": p50, "burst50_ms": burst}))
"""


def main() -> None:
    kube = FakeKube()
    kube.add_service_account("team-a", "web", {"eks.amazonaws.com/role-arn": "arn:x"})
    rows = []
    try:
        for which in ("lightkube", "kubernetes"):
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, which, kube.url, kube.token_file],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=False,
            )
            if proc.returncode != 0:
                print(f"{which}: not measured ({proc.stderr.strip().splitlines()[-1]})")
                continue
            rows.append((which, json.loads(proc.stdout)))
    finally:
        kube.close()
    head = ("client", "import ms", "RSS MiB", "RSS after", "GET p50", "50 at once")
    print("{:<12}{:>10}{:>9}{:>10}{:>9}{:>11}".format(*head))
    for which, r in rows:
        print(
            f"{which:<12}{r['import_ms']:>10.0f}{r['rss_import']:>9.1f}{r['rss_after']:>10.1f}"
            f"{r['p50_ms']:>8.2f}m{r['burst50_ms']:>10.1f}m"
        )
    if kube.rejected:
        print(f"rejected by the API server: {dict(kube.rejected)}")


if __name__ == "__main__":
    main()
