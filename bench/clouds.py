"""Every cloud's fakes for the benchmarks, on 127.0.0.1, with ``objects`` secrets each.

One pod (``team-a/web-0``, ServiceAccount ``web``) may read them all: an IRSA role
that trusts it (moto behind the AWS proxy), a Google service account it impersonates
(Secret Manager fake), an Entra app federated with it (Key Vault fake). ``params`` and
``tokens`` are what the driver would send for a class of the first ``k`` of them on
the cloud's own socket; ``floor`` runs ``k`` reads through the cloud's own SDK, all in
flight at once or one after another, against the same fakes: what any provider using
that SDK can at best do.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from keyferry_fakes.aws_faults import AwsFaults, moto_url, seed_clients
from keyferry_fakes.azure import TENANT, FakeAzure, fake_azure
from keyferry_fakes.azure import pod_token as azure_pod_token
from keyferry_fakes.gcp import GoogleStack, google_stack
from keyferry_fakes.harness import DEFAULT_POD
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER

NS, POD, UID, SA = DEFAULT_POD
ROLE = "arn:aws:iam::123456789012:role/bench"
GSA = "bench@my-project.iam.gserviceaccount.com"
APP = "bench-app"
VAULT = "bench-kv"
CLOUDS = ("aws", "gcp", "azure")
LOCAL_FILES = 5


def value(cloud: str, i: int) -> str:
    return json.dumps({"cloud": cloud, "index": i, "pad": "x" * 64})


@dataclass
class Clouds:
    kube: FakeKube
    proxy: AwsFaults
    google: GoogleStack
    azure: FakeAzure
    local_root: Path
    objects: int

    def backends(self) -> dict[str, Any]:
        return {
            "aws": {"endpoint_url": self.proxy.url, "region": "us-east-1"},
            "gcp": self.google.settings(),
            "azure": self.azure.settings(),
        }

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The server configuration for all four sockets (a ``serve --config`` file's
        content, or ``running_server`` overrides)."""
        return {
            "providers": "keyferry,aws,gcp,azure",
            "backends": self.backends(),
            "kubernetes": self.kube.settings(),
            "local_root": str(self.local_root),
            "http_address": "",
            **overrides,
        }

    def params(self, cloud: str, k: int) -> dict[str, str]:
        """The SecretProviderClass parameters of a class of ``k`` objects."""
        if cloud == "local":
            items = [f"- {{backend: local, name: f{i}.json, path: f{i}}}" for i in range(k)]
            return {"objects": "\n".join(items)}
        if cloud == "aws":
            items = [f"- objectName: s{i}\n  objectType: secretsmanager" for i in range(k)]
            return {"objects": "\n".join(items)}
        if cloud == "gcp":
            lines = [
                f'- resourceName: "projects/my-project/secrets/s{i}/versions/latest"\n  path: s{i}'
                for i in range(k)
            ]
            return {"secrets": "\n".join(lines)}
        entries = "".join(
            f"  - |\n    objectName: s{i}\n    objectType: secret\n" for i in range(k)
        )
        return {
            "keyvaultName": VAULT,
            "tenantID": TENANT,
            "clientID": APP,
            "objects": "array:\n" + entries,
        }

    def tokens(self, cloud: str, pod: str = POD) -> dict[str, str]:
        """The pod's projected tokens the driver passes for ``cloud``."""
        if cloud == "aws":
            return {"sts.amazonaws.com": ISSUER.pod_token("sts.amazonaws.com", NS, SA, pod=pod)}
        if cloud == "gcp":
            return self.google.token(NS, SA, pod=pod)
        if cloud == "azure":
            return {"api://AzureADTokenExchange": azure_pod_token(NS, SA, pod=pod)}
        return {}

    def delay(self, seconds: float) -> None:
        """Every value read of every cloud takes ``seconds`` at the fake."""
        for op in ("GetSecretValue", "BatchGetSecretValue"):
            self.proxy.delay[op] = seconds
        self.google.secret_manager.delay = seconds
        self.azure.vault.latency = seconds

    def calls(self, cloud: str) -> int:
        """Value reads the cloud has answered so far (token exchanges not counted)."""
        if cloud == "aws":
            return sum(1 for r in self.proxy.requests if "SecretValue" in r.operation)
        if cloud == "gcp":
            return int(self.google.google.counts["secretmanager"])
        return sum(n for path, n in self.azure.vault.requests.items() if "/secrets/" in path)

    # -- the SDK floors -----------------------------------------------------------

    def reader(self, cloud: str) -> Callable[[int], bytes]:
        """``read(i)``: object ``i`` through the cloud's own SDK client, as the pod's
        identity, with a connection pool large enough for ``objects`` reads at once."""
        if cloud == "aws":
            import boto3
            from botocore.config import Config

            keys = self.proxy.assume_role(ROLE, "floor")
            sm = boto3.client(
                "secretsmanager",
                endpoint_url=self.proxy.url,
                region_name="us-east-1",
                aws_access_key_id=keys.access_key,
                aws_secret_access_key=keys.secret_key,
                aws_session_token=keys.session_token,
                config=Config(max_pool_connections=self.objects),
            )
            return lambda i: str(sm.get_secret_value(SecretId=f"s{i}")["SecretString"]).encode()
        if cloud == "gcp":
            from google.cloud import secretmanager_v1
            from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
                SecretManagerServiceGrpcTransport,
            )

            channel = grpc.insecure_channel(self.google.secret_manager.endpoint)
            gclient = secretmanager_v1.SecretManagerServiceClient(
                transport=SecretManagerServiceGrpcTransport(channel=channel)
            )
            token = self.google.google.service_account_token(GSA)
            metadata = [("authorization", f"Bearer {token}")]

            def gcp(i: int) -> bytes:
                name = f"projects/my-project/secrets/s{i}/versions/latest"
                got = gclient.access_secret_version(request={"name": name}, metadata=metadata)
                return bytes(got.payload.data)

            return gcp
        import requests
        from azure.core.pipeline.transport import RequestsTransport
        from azure.identity import ClientAssertionCredential
        from azure.keyvault.secrets import SecretClient

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.objects)
        session.mount("https://", adapter)
        credential = ClientAssertionCredential(
            TENANT,
            APP,
            lambda: azure_pod_token(NS, SA),
            authority=self.azure.entra.authority,
            connection_verify=self.azure.ca_path,
        )
        client = SecretClient(
            self.azure.vault.vault_url_template().replace("{name}", VAULT),
            credential,
            verify_challenge_resource=False,
            connection_verify=self.azure.ca_path,
            transport=RequestsTransport(
                session=session, session_owner=True, connection_verify=self.azure.ca_path
            ),
        )
        return lambda i: str(client.get_secret(f"s{i}").value).encode()

    @contextmanager
    def floor(self, cloud: str, k: int) -> Iterator[Callable[[bool], float]]:
        """``timed(parallel)``: seconds to read ``k`` objects through the cloud's SDK, all
        in flight at once (one thread each) or one after another."""
        read = self.reader(cloud)
        with ThreadPoolExecutor(max(1, k)) as pool:
            list(pool.map(read, range(k)))  # credentials, as many connections as calls

            def timed(parallel: bool) -> float:
                start = time.perf_counter()
                got = list(pool.map(read, range(k))) if parallel else [read(i) for i in range(k)]
                assert len(got) == k
                return time.perf_counter() - start

            yield timed


@contextmanager
def clouds(objects: int = 50) -> Iterator[Clouds]:
    """All fakes up, each cloud holding ``objects`` secrets ``s0``.. readable by the pod;
    ``LOCAL_FILES`` files ``f0.json``.. under a local root."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kf-bench-")))
        kube = FakeKube()
        stack.callback(kube.close)
        kube.add_service_account(
            NS,
            SA,
            {"eks.amazonaws.com/role-arn": ROLE, "iam.gke.io/gcp-service-account": GSA},
        )
        moto_url()
        proxy = AwsFaults(moto_url())
        stack.callback(proxy.close)
        proxy.trust(ROLE, NS, SA)
        sm, _ = seed_clients("us-east-1")
        google = google_stack()
        stack.callback(google.stop)
        google.google.bind(GSA, NS, SA)
        azure = stack.enter_context(fake_azure(str(tmp)))
        azure.entra.federate(APP, NS, SA)
        azure.vault.grant_reader(VAULT, APP)
        for i in range(objects):
            name = f"s{i}"
            try:
                sm.create_secret(Name=name, SecretString=value("aws", i))
            except sm.exceptions.ResourceExistsException:  # moto is shared per process
                sm.put_secret_value(SecretId=name, SecretString=value("aws", i))
            google.secret_manager.add_version("my-project", name, value("gcp", i).encode())
            google.secret_manager.allow("my-project", name, f"serviceAccount:{GSA}")
            azure.vault.add_secret(VAULT, name, value("azure", i))
        root = tmp / "local"
        root.mkdir()
        for i in range(LOCAL_FILES):
            (root / f"f{i}.json").write_text(value("local", i))
        yield Clouds(kube, proxy, google, azure, root, objects)
