"""A rotation wave: ``pods`` pods of one ServiceAccount mount the same 5-secret class
over the ``aws`` socket, 16 at a time, on a server that has cached nothing yet (the
default 30 s value cache). Counted at the fake: Secrets Manager reads and STS
exchanges. The official provider's pattern is one GetSecretValue per secret per pod."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.clouds import NS, SA, UID, Clouds
from bench.table import Row, Section
from keyferry_fakes.harness import running_server


def run(c: Clouds, workdir: Path, pods: int = 100, secrets: int = 5) -> Section:
    config = c.config(log_level="warning", providers="aws")
    providers, backends = config.pop("providers"), config.pop("backends")
    params = c.params("aws", secrets)
    reads, sts = c.calls("aws"), c.proxy.count("AssumeRoleWithWebIdentity")
    with running_server(workdir, providers=providers, backends=backends, **config) as srv:

        def one(i: int) -> int:
            pod = (NS, f"web-{i}", f"{UID[:-3]}{i:03d}", SA)
            resp = srv.mount("aws", params, pod=pod, tokens=c.tokens("aws", pod=pod[1]))
            return len(resp.files)

        with ThreadPoolExecutor(16) as pool:
            assert all(n == secrets for n in pool.map(one, range(pods)))
    reads = c.calls("aws") - reads
    sts = c.proxy.count("AssumeRoleWithWebIdentity") - sts
    official = pods * secrets
    return Section(
        f"rotation wave: {pods} pods x {secrets} objects, one ServiceAccount (aws)",
        [
            Row("Secrets Manager calls", str(reads), f"{official} (official)", "", "1", reads == 1),
            Row("STS calls", str(sts), f"{pods} (official)", "", "1", sts == 1),
        ],
    )
