"""Generated MountRequests against request decoding and every dialect parser.

Most go through the in-process functions the server runs (``protocol.parse``,
``protocol.decode``, ``pipeline.make_plan``): a rejection must be INVALID_ARGUMENT (or
one of the few documented FAILED_PRECONDITIONs: a retired or unconfigured identity
mode), nothing may raise anything else. Others go over a real socket to a real server,
concurrently: the server must answer each exactly as the in-process
functions decided, and a request they accept must end in a well-defined fetch outcome
(never INTERNAL or UNKNOWN, never a hang). Nothing leaves 127.0.0.1: the local
backend serves real files, the few tokens sent are not JWTs any cloud would take, and
every cloud, identity and Kubernetes endpoint is a closed local port. The number run is
printed at the end of the session (``fuzz: ...``).

``make test`` runs 10,000 (8,000 in process, 2,000 over the socket: about 8 s since the
parameters are parsed by libyaml); ``make test-load`` runs 20,000
(``KEYFERRY_FUZZ_SCALE=8``; each unit is 2,500 requests).

Hypothesis picks how each request is malformed and seeds a ``random.Random`` that builds
the rest (drawing every field through Hypothesis costs ten times as much); a failure
quotes the request's bytes.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyferry_fakes.harness import Server, driver_request
from provider import native, pipeline, protocol
from provider.clouds.aws import dialect as aws
from provider.clouds.azure import dialect as azure
from provider.clouds.azure import objects as azure_objects
from provider.clouds.azure.settings import BUILTIN_CLOUDS
from provider.clouds.gcp import dialect as gcp
from provider.errors import Code, KeyferryError, clip
from provider.server import MAX_MESSAGE_CHARS

SCALE = int(os.environ.get("KEYFERRY_FUZZ_SCALE", "4"))
IN_PROCESS, PER_EXAMPLE = 100 * SCALE, 5
"""In process, per dialect (four of them): Hypothesis examples, requests each."""
SOCKET_BATCHES, BATCH = 20 * SCALE, 25
"""Over the socket: Hypothesis examples, requests each (sent at once)."""

# Documented FAILED_PRECONDITIONs of parsing: valid requests for what this server refuses.
PRECONDITIONS = (
    "aad-pod-identity is retired",
    "AKS identity binding is not supported",
    "needs the pod's service-account token",
)
# Outcomes of a fetch after a plan was accepted; INTERNAL/UNKNOWN are never among them.
FETCH_CODES = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "FAILED_PRECONDITION",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
}
LOCAL_FILES = {
    "plain.txt": b"hello",
    "doc.json": b'{"user": "app", "pass": "pw", "n": [1, 2]}',
    "doc.yaml": b"user: app\nnested: {a: 1}\n",
    "bin.dat": bytes(range(256)),
    "dir/inner.txt": b"inner",
}
SOCKETS = {"keyferry": "native", "aws": "aws", "gcp": "gcp", "azure": "azure"}
CLOSED = "127.0.0.1:9"  # the discard port: nothing listens, a connection is refused

# -- values -----------------------------------------------------------------------------

HOSTILE = [
    "",
    " ",
    ".",
    "..",
    "../x",
    "/abs",
    "a/../b",
    "a//b",
    "x" * 300,
    "ünïcødé",
    "a\x00b",
    "*",
    "&anchor x",
    "*alias",
    "!!binary AA==",
    "!!python/object:os.system",
    "{a: b}",
    "[1, 2]",
    "0777",
    "0o644",
    "07777",
    "-1",
    "true",
    "null",
    "~",
    "1e400",
    ".nan",
    "a\nb",
    "'",
    '"',
    "{{",
    "- - -",
    "%TAG ! x",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
    "arn:aws:ssm:us-east-1:123456789012:parameter/app/db",
    "projects/p/secrets/s/versions/latest",
    "projects/p/locations/us-east1/secrets/s/versions/1",
    "projects/p/locations/global/parameters/app/versions/v1",
    "https://kv1.vault.azure.net/secrets/db",
]
ARN_SECRET, ARN_PARAMETER, *GCP_NAMES, _ = HOSTILE[-6:]
ALPHABET = "aZ09 -_./:\\'\"{}[]&*!#%@`|>\t\n\x00\x7f\x85éü✓\u2028\U0001f600"
PATHS = ["out.txt", "dir/out", "a", "b/c/d", "x.pem"]
MODES = ["0600", "0644", "0o400", "0400", "0755"]
STRAY = [":", "-", "{", "[", "'", "\t", "&a ", "*a", "\x85", "!!str ", "? ", "|"]


def text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(13)))


def scalar(rng: random.Random) -> Any:
    """Hostile text or a value of a type the field may not expect."""
    kind = rng.randrange(7)
    if kind == 0:
        return text(rng)
    if kind == 1:
        return rng.randrange(-(2**70), 2**70)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice([0.5, -1e39, 1e39, 3.4028235677973366e38, math.inf, math.nan, 1e-50])
    return rng.choice(HOSTILE)


def bad(rng: random.Random) -> Any:
    """A value where it does not belong: hostile, a wrong type, a list or a mapping."""
    kind = rng.randrange(6)
    if kind == 0:
        return [scalar(rng) for _ in range(rng.randrange(3))]
    if kind == 1:
        return {rng.choice(["a", "path", "objectName"]): scalar(rng)}
    return scalar(rng)


class Shape:
    """How one kind of object (or parameter map) looks: keys it must have and keys it may
    have, each with values the parser accepts. :meth:`make` builds a valid one and then,
    a quarter of the time, spoils it: a hostile value, a missing key, an unknown key."""

    def __init__(
        self, required: Mapping[str, list[Any]], optional: Mapping[str, list[Any]]
    ) -> None:
        self.required = dict(required)
        self.optional = dict(optional)
        self.keys = sorted({*required, *optional})

    def make(self, rng: random.Random) -> dict[str, Any]:
        out = {k: rng.choice(v) for k, v in self.required.items()}
        for key in rng.sample(sorted(self.optional), min(len(self.optional), rng.randrange(4))):
            out[key] = rng.choice(self.optional[key])
        spoil = rng.randrange(12)
        if spoil == 0:
            out[rng.choice(self.keys)] = bad(rng)
        elif spoil == 1 and out:
            del out[rng.choice(sorted(out))]
        elif spoil == 2:
            out[text(rng)] = scalar(rng)
        return out


class _Dumper(yaml.CSafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # values shared between objects are written out, as a user would


def yaml_text(rng: random.Random, value: Any) -> str:
    """``value`` as YAML (block or flow style), sometimes cut short or with a stray
    character, sometimes hostile text instead."""
    doc = yaml.dump(
        value, Dumper=_Dumper, default_flow_style=rng.random() < 0.5, allow_unicode=True
    )
    how = rng.randrange(16)
    if how == 0:
        doc = doc[: rng.randrange(len(doc) + 1)]
    elif how == 1:
        at = rng.randrange(len(doc) + 1)
        doc = doc[:at] + rng.choice(STRAY) + doc[at:]
    elif how == 2:
        doc = rng.choice(HOSTILE)
    return doc


def listing(rng: random.Random, *shapes: Shape) -> str:
    return yaml_text(rng, [rng.choice(shapes).make(rng) for _ in range(rng.randrange(1, 4))])


# -- each dialect's parameters -----------------------------------------------------------

LOCAL_NAMES = [*LOCAL_FILES, "missing.txt", "dir", "./plain.txt", "dir//inner.txt"]
COMMON: dict[str, list[Any]] = {
    "path": PATHS,
    "mode": MODES,
    "decode": list(native.DECODINGS),
    "optional": [True, False],
    "id": ["x", "y"],
    "extract": [
        [{"path": "u", "jsonKey": "user"}],
        [{"path": "v", "jmesPath": "n[0]", "mode": "0600"}],
        [{"path": "w", "yamlKey": "user", "decode": "utf-8"}],
        [{"path": "x", "jmesPath": "length(@)"}, {"path": "y", "jsonKey": "pass"}],
    ],
    "write": [True, False, "no"],
}
TEMPLATES = [  # reading what the objects above write, or trying what the sandbox refuses
    "{{ values['out.txt'] }}",
    "A={{ values['u'] | shellquote }}\nB={{ values['y'] | json }}\n",
    "{% for c in values['a'] %}{{ loop.index }}{% endfor %}{{ values['dir/out'] | b64encode }}",
    "{{ values['x'] * 100000000 }}",
    "{% for i in range(20000) %}{% for j in range(20000) %}{% endfor %}{% endfor %}",
    "{{ ''.__class__.__mro__ }}{{ values['v'] }}",
    "{% include '/etc/passwd' %}",
    "{{ values['nope'] }}",
    "{{ values['b/c/d'] | int + 1 }}{{ values['w'][values['w']] }}",
]
SELECTIONS: dict[str, list[Any]] = {
    "local": [
        {"directory": "dir"},
        {"directory": ".", "recursive": "true"},
        {"directory": "missing"},
        {"directory": "plain.txt"},
        {"directory": "dir", "recursive": "false"},
    ],
    "aws": [
        {"namePrefix": "app/"},
        {"tags": {"team": "a"}},
        {"namePrefix": "app/", "tags": {"team": "a", "env": "prod"}},
        {"path": "/app/prod", "recursive": "true"},
        {"path": "/app"},
    ],
    "gcp": [
        {"project": "my-project", "labels": {"app": "web"}},
        {"project": "my-project", "location": "us-east1", "labels": {"app": "*", "env": "p"}},
        {"project": "my-project", "labels": {"App": "web"}},
        {"project": "my-project", "labels": {"app": "a OR labels.b=c"}},
        {"labels": {"app": "web"}},
    ],
    "azure": [
        {"namePrefix": "app-"},
        {"tags": {"team": "a", "env": "*"}},
        {"namePrefix": "app-", "includeCertificates": "true"},
        {"namePrefix": "../x"},
        {"includeCertificates": "yes"},
    ],
}
NATIVE = [
    Shape({"backend": ["local"], "name": LOCAL_NAMES}, COMMON),
    Shape(  # local too: those can succeed over the socket
        {"backend": ["local"], "select": SELECTIONS["local"]},
        {**COMMON, "maxMatches": ["1", "3", "1000"]},
    ),
    Shape(
        {"template": TEMPLATES, "path": ["app.env", "t/x", *PATHS]}, {"mode": MODES, "id": ["t"]}
    ),
    Shape(
        {"backend": ["aws"], "select": SELECTIONS["aws"]},
        {"region": ["us-east-1"], "auth": ["irsa", "podIdentity"], "path": PATHS},
    ),
    Shape(
        {"backend": ["aws"], "name": ["MySecret", "/app/db", ARN_SECRET, ARN_PARAMETER]},
        {
            "service": ["secretsmanager", "ssm"],
            "region": ["us-east-1", "eu-west-1"],
            "versionStage": ["AWSCURRENT"],
            "failoverRegion": ["us-east-2"],
            "auth": ["irsa", "podIdentity"],
            "path": PATHS,
        },
    ),
    Shape(
        {"backend": ["gcp"], "select": SELECTIONS["gcp"]},
        {"auth": list(gcp.NATIVE_AUTH), "path": PATHS, "maxMatches": ["2"]},
    ),
    Shape(
        {"backend": ["azure"], "vault": ["kv1"], "select": SELECTIONS["azure"]},
        {"clientID": ["11111111-1111-1111-1111-111111111111"], "path": PATHS, "type": ["key"]},
    ),
    Shape(
        {"backend": ["gcp"], "name": GCP_NAMES},
        {"auth": list(gcp.NATIVE_AUTH), "path": PATHS, "mode": MODES},
    ),
    Shape(
        {"backend": ["azure"], "vault": ["kv1", "kv-2"], "name": ["db", "tls"]},
        {
            "type": list(azure.NATIVE_TYPES),
            "format": list(azure.NATIVE_FORMATS),
            "tenantID": ["00000000-0000-0000-0000-000000000000"],
            "clientID": ["11111111-1111-1111-1111-111111111111"],
            "path": PATHS,
        },
    ),
]
AWS_OBJECT = Shape(
    {"objectName": ["MySecret", "Other", ARN_SECRET], "objectType": ["secretsmanager"]},
    {
        "objectAlias": PATHS,
        "objectVersionLabel": ["AWSCURRENT", "AWSPREVIOUS"],
        "filePermission": MODES,
        "jmesPath": [
            [{"path": "user", "objectAlias": "u"}],
            [{"path": "n[0]", "objectAlias": "n0", "filePermission": "0600"}],
        ],
    },
)
AWS_SSM = Shape(
    {"objectName": ["/app/db", "name", ARN_PARAMETER], "objectType": ["ssmparameter"]},
    {"objectAlias": PATHS, "objectVersionLabel": ["live"]},
)
AWS_PARAMS = Shape(
    {"region": ["us-east-1"]},
    {
        "failoverRegion": ["us-east-2"],
        "pathTranslation": ["_", "False"],
        "usePodIdentity": ["true", "false"],
        "preferredAddressType": list(aws.ADDRESS_TYPES),
    },
)
GCP_ENTRY = Shape(
    {"resourceName": GCP_NAMES, "path": PATHS},
    {"mode": [384, 256, 420], "extractJSONKey": ["user"]},
)
GCP_PARAMS = Shape({}, {"auth": list(gcp.AUTH_MODES)})
AZURE_OBJECT = Shape(
    {"objectName": ["db", "tls", "a-b"], "objectType": list(azure_objects.OBJECT_TYPES)},
    {
        "objectVersion": ["", "abc123"],
        "objectVersionHistory": ["2", "3"],
        "objectAlias": PATHS,
        "objectFormat": list(azure_objects.FORMATS),
        "objectEncoding": list(azure_objects.ENCODINGS),
        "filePermission": MODES,
    },
)
AZURE_PARAMS = Shape(
    {"keyvaultName": ["kv1", "kv-2"], "tenantID": ["00000000-0000-0000-0000-000000000000"]},
    {
        "clientID": ["11111111-1111-1111-1111-111111111111"],
        "cloudName": ["", "AzurePublicCloud", "AzureChinaCloud"],
        "useVMManagedIdentity": ["false"],
        "usePodIdentity": ["false", "false", "false", "true"],
        "useAzureTokenProxy": ["false", "false", "false", "true"],
    },
)


def parameters(rng: random.Random, dialect: str) -> dict[str, str]:
    params: dict[str, Any]
    if dialect == "native":  # half of them local only: those can succeed over the socket
        params = {"objects": listing(rng, *(NATIVE if rng.random() < 0.5 else NATIVE[:3]))}
    elif dialect == "aws":
        params = {**AWS_PARAMS.make(rng), "objects": listing(rng, AWS_OBJECT, AWS_SSM)}
    elif dialect == "gcp":
        params = {**GCP_PARAMS.make(rng), "secrets": listing(rng, GCP_ENTRY)}
    else:
        docs = [yaml_text(rng, AZURE_OBJECT.make(rng)) for _ in range(rng.randrange(1, 4))]
        params = {**AZURE_PARAMS.make(rng), "objects": yaml_text(rng, {"array": docs})}
    # Parameters are strings in the request; a value that is not is sent as JSON text.
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}


# -- whole requests ---------------------------------------------------------------------

AUDIENCES = {
    "native": ["sts.amazonaws.com", "api://AzureADTokenExchange", "x"],
    "aws": ["sts.amazonaws.com", "pods.eks.amazonaws.com", "x"],
    "gcp": ["fuzz", "x"],
    "azure": ["api://AzureADTokenExchange", "api://AzureADTokenExchange", "x"],
}
BAD_ATTRIBUTES = ["", "null", "[]", "{", '{"a": 1}', "1", '{"a": [1]}', '{"a": "\\ud800"}']
BAD_SECRETS = ["", "{}", "[1]", '{"k": 1}', '{"k": "v"}', "{", "null"]
BAD_PERMISSIONS = ["", "0644", '"420"', "-1", "512", "x", "1e3", "true", '"²"']
BAD_TOKENS = ["", "{", "[]", '{"aud": 1}', '{"aud": {"token": 2}}', '{"aud": {}}']


def request_bytes(rng: random.Random, dialect: str, how: int) -> bytes:
    """A MountRequest on the wire: driver-shaped with generated parameters, with one of
    its other fields malformed (``how``), or bytes that are not a MountRequest at all."""
    if how == 0:
        return rng.randbytes(rng.randrange(64))
    params = parameters(rng, dialect)
    tokens = {rng.choice(AUDIENCES[dialect]): "fuzz-token"} if 6 <= how <= 11 else None
    request = driver_request(params, permission=rng.choice(["420", "384"]), tokens=tokens)
    if how == 1:
        request.attributes = rng.choice(BAD_ATTRIBUTES)
    elif how == 2:
        request.secrets = rng.choice(BAD_SECRETS)
    elif how == 3:
        request.permission = rng.choice(BAD_PERMISSIONS)
    elif how == 4:
        attrs = json.loads(request.attributes)
        attrs["csi.storage.k8s.io/serviceAccount.tokens"] = rng.choice(BAD_TOKENS)
        request.attributes = json.dumps(attrs)
    data = request.SerializeToString()
    if how == 5:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
    return data


REQUEST = st.tuples(st.integers(0, 19), st.randoms(use_true_random=True))


def decided(raw: bytes, dialect: str) -> tuple[str, str] | None:
    """What the server must answer before fetching: ``(code, message)``, or ``None`` when
    the request is accepted. Anything but a KeyferryError propagates (a test failure)."""
    try:
        request = protocol.parse(raw)
        name = next(n for n, d in SOCKETS.items() if d == dialect)
        mount = protocol.decode(request, dialect=dialect, provider_name=name)
        pipeline.make_plan(mount)
    except KeyferryError as exc:
        return exc.code.value, clip(exc.message, MAX_MESSAGE_CHARS)
    return None


def check_rejection(verdict: tuple[str, str] | None, raw: bytes) -> None:
    if verdict is None:
        return
    code, message = verdict
    if code == Code.FAILED_PRECONDITION.value:
        assert any(p in message for p in PRECONDITIONS), (message, raw)
    else:
        assert code == Code.INVALID_ARGUMENT.value, (verdict, raw)


def fuzz_settings(examples: int) -> settings:
    """A fixed number of examples, no deadline (the work per example is large by design)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- in process ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(SOCKETS.values()))
def test_generated_requests_are_accepted_or_invalid_argument(
    dialect: str, fuzz_count: Counter[str]
) -> None:
    outcomes: Counter[str] = Counter()

    @fuzz_settings(IN_PROCESS)
    @given(REQUEST)
    def run(choice: tuple[int, random.Random]) -> None:
        how, rng = choice
        for i in range(PER_EXAMPLE):
            raw = request_bytes(rng, dialect, how if i == 0 else rng.randrange(20))
            verdict = decided(raw, dialect)
            check_rejection(verdict, raw)
            outcomes["accepted" if verdict is None else verdict[0]] += 1

    run()
    fuzz_count["in-process"] += sum(outcomes.values())
    assert sum(outcomes.values()) == IN_PROCESS * PER_EXAMPLE
    assert outcomes["accepted"] and outcomes["INVALID_ARGUMENT"], outcomes  # both explored


# -- over the socket ---------------------------------------------------------------------


@pytest.fixture
def srv(serve: Callable[..., Server], tmp_path: Path) -> Server:
    root = tmp_path / "root"
    for name, data in LOCAL_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (tmp_path / "token").write_text("not-a-token")
    closed_cloud = {
        "authority_host": f"https://{CLOSED}",
        "vault_url": f"https://{CLOSED}/{{name}}",
    }
    return serve(
        providers=",".join(SOCKETS),
        local_root=root,
        mount_timeout_seconds=5,
        log_level="info",
        kubernetes={
            "api_url": f"http://{CLOSED}",
            "insecure": True,
            "token_file": str(tmp_path / "token"),
        },
        backends={
            "aws": {
                "endpoint_url": f"http://{CLOSED}",
                "pod_identity": {"ipv4_url": f"http://{CLOSED}", "ipv6_url": f"http://{CLOSED}"},
                "max_attempts": 1,
            },
            "gcp": {
                "insecure": True,
                "discover_from_metadata": False,
                "sts_url": f"http://{CLOSED}/sts",
                "iam_credentials_url": f"http://{CLOSED}",
                "oauth2_token_url": f"http://{CLOSED}/token",
                "metadata_url": f"http://{CLOSED}",
                # identity fails first (no JWT, STS closed), so no call reaches these
                "secret_manager_endpoint": CLOSED,
                "secret_manager_locations": {"us-east1": CLOSED, "global": CLOSED},
                "parameter_manager_endpoint": CLOSED,
                "parameter_manager_locations": {"us-east1": CLOSED, "global": CLOSED},
                "audience": "fuzz",
                "workload_identity_pool": "fuzz.svc.id.goog",
            },
            "azure": {
                "allow_service_principal": False,
                "clouds": {name: closed_cloud for name in BUILTIN_CLOUDS},
            },
        },
    )


def test_generated_requests_over_the_socket_get_what_decoding_decided(
    srv: Server, fuzz_count: Counter[str]
) -> None:
    outcomes: Counter[str] = Counter()
    channels = {name: srv.channel(name) for name in SOCKETS}
    mount_raw = {  # raw bytes: some requests are not a MountRequest at all
        name: channel.unary_unary("/v1alpha1.CSIDriverProvider/Mount", None, None)
        for name, channel in channels.items()
    }

    def send(item: tuple[str, bytes]) -> tuple[str, str]:
        name, raw = item
        try:
            mount_raw[name](raw, timeout=30)  # the server's own budget is 5 s
        except grpc.RpcError as err:
            if err.code() is grpc.StatusCode.DEADLINE_EXCEEDED and not err.details():
                return "HANG", ""
            return err.code().name, err.details() or ""
        return "OK", ""

    pool = ThreadPoolExecutor(BATCH)
    batch = st.lists(
        st.tuples(st.sampled_from(sorted(SOCKETS)), REQUEST), min_size=BATCH, max_size=BATCH
    )

    # Generated requests succeed rarely (a few in a thousand, and none in some runs): each
    # batch also carries one request that must succeed while the garbage is in flight.
    ok_request = ("keyferry", driver_request({"objects": "- {backend: local, name: plain.txt}"}))

    @fuzz_settings(SOCKET_BATCHES)
    @given(batch)
    def run(choices: list[tuple[str, tuple[int, random.Random]]]) -> None:
        requests = [(n, request_bytes(c[1], SOCKETS[n], c[0])) for n, c in choices]
        *answers, good_answer = pool.map(
            send, [*requests, (ok_request[0], ok_request[1].SerializeToString())]
        )
        assert good_answer == ("OK", ""), good_answer
        for (name, raw), (code, message) in zip(requests, answers, strict=True):
            verdict = decided(raw, SOCKETS[name])
            if verdict is not None:
                assert (code, message) == verdict, raw
            else:
                assert code in FETCH_CODES, (name, code, message, raw)
            outcomes[code] += 1

    try:
        run()
    finally:
        pool.shutdown()
        for channel in channels.values():
            channel.close()
    fuzz_count["over the socket"] += sum(outcomes.values())
    assert sum(outcomes.values()) == SOCKET_BATCHES * BATCH
    assert outcomes["INVALID_ARGUMENT"], outcomes
    # and the server still answers
    assert srv.version("keyferry").runtime_name == "keyferry"
    good = {"objects": "- {backend: local, name: plain.txt}"}
    assert srv.mount("keyferry", good).files[0].contents == b"hello"
