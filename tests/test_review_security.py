"""Security review: hostile parameters, resource exhaustion, status codes and log
integrity, through the real dialects, the real server (keyferry_fakes.harness) and the
fake clouds (tests.fakes).

Tests that guard against a hang run the hostile input in a child process with
CPU and memory limits, so a regression fails the test instead of freezing or
exhausting the test runner.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from keyferry_fakes.azure import TENANT, FakeAzure, fake_azure, pod_token
from keyferry_fakes.harness import Server, driver_request, running_server
from keyferry_fakes.kube import FakeKube
from provider import protocol
from provider.errors import Code, KeyferryError
from provider.model import Mount, Pod
from provider.pipeline import make_plan
from tests.clouds.azure.test_e2e import AUD as AZURE_AUD
from tests.clouds.azure.test_e2e import POD as AZURE_POD
from tests.clouds.azure.test_e2e import objects as azure_objects

REPO = Path(__file__).resolve().parents[1]
POD = Pod("team-a", "web-0", "11111111-2222-3333-4444-555555555555", "web")
HELLO = "- {backend: local, name: plain.txt, path: plain.txt}"

# -- helpers --------------------------------------------------------------------------


def alias_bomb(levels: int, field: str, head: list[str]) -> str:
    """A native ``objects`` list whose last item sets ``field`` to a 10**levels alias bomb.

    The anchors are defined by earlier list items (each an invalid object, so
    the dialect reports them and goes on to the last item)."""
    lines = ["- &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"- &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.extend(head)
    lines.append(f"  {field}: *a{levels - 1}")
    return "\n".join(lines)


LOCAL_HEAD = ["- backend: local", "  name: plain.txt", "  path: out.txt"]
GCP_HEAD = ["- backend: gcp", "  name: projects/p/secrets/s/versions/latest", "  path: out.txt"]
AZURE_HEAD = [
    "- backend: azure",
    "  vault: kv1",
    "  name: db",
    "  tenantID: t",
    "  path: out.txt",
]


def jmespath_bomb(doublings: int) -> str:
    """Each ``[@,@]`` pipe doubles the value; ``to_string`` then serialises 2**n leaves."""
    return " | ".join(["[@,@]"] * doublings) + " | to_string(@)"


_CHILD = """
import json, sys
from provider.errors import KeyferryError
from provider.model import Mount, Pod
from provider.pipeline import make_plan
params, dialect = json.loads(sys.argv[1])
mount = Mount(pod=Pod("team-a", "web-0", "uid", "web"), parameters=params, dialect=dialect)
try:
    make_plan(mount)
    print("RESULT OK")
except KeyferryError as exc:
    print("RESULT " + exc.code.value)
"""


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (10, 12))
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def plan_in_child(params: dict[str, str], dialect: str) -> str:
    """``make_plan`` in a child process limited to 10 CPU seconds and 3 GiB.

    Returns the outcome line, or a description of how the child died: a parser
    that does exponential work is killed (SIGXCPU) or runs out of memory."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([params, dialect])],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=_limits,
        timeout=300,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return line.removeprefix("RESULT ")
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return f"child died (exit {proc.returncode}): {tail[:200]}"


def plan_code(params: dict[str, str], dialect: str) -> str:
    mount = Mount(pod=POD, parameters=params, dialect=dialect)
    try:
        make_plan(mount)
    except KeyferryError as exc:
        return exc.code.value
    except Exception as exc:  # what the server turns into INTERNAL
        return f"uncaught {type(exc).__name__}"
    return "OK"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    (r / "plain.txt").write_text("hello")
    (r / "bigint.json").write_text('{"n": ' + "1" * 5000 + ', "user": "app"}')
    (r / "surrogate.json").write_text('{"user": "\\ud800"}')
    (r / "bigint.yaml").write_text("n: " + "1" * 5000 + "\nuser: app\n")
    (r / "badfloat.yaml").write_text("n: !!float 1x\nuser: app\n")
    return r


@pytest.fixture
def srv(tmp_path: Path, root: Path) -> Iterator[Server]:
    with running_server(tmp_path, local_root=root) as s:
        yield s


def rpc_error(srv: Server, params: dict[str, str], **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("keyferry", params, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- 1. resource exhaustion: exponential work on the event loop ----------------------


@pytest.mark.parametrize(
    ("dialect", "params"),
    [
        (
            "native",
            {
                "objects": "- backend: local\n  name: plain.txt\n  extract:\n"
                f"  - path: out\n    jmesPath: '{jmespath_bomb(40)}'"
            },
        ),
        (
            "aws",
            {
                "region": "us-east-1",
                "objects": "- objectName: db\n  objectType: secretsmanager\n  jmesPath:\n"
                f"  - path: '{jmespath_bomb(40)}'\n    objectAlias: out",
            },
        ),
    ],
    ids=["native", "aws"],
)
def test_jmespath_expression_with_exponential_output_is_rejected_not_evaluated(
    dialect: str, params: dict[str, str]
) -> None:
    # compile_jmespath "dry-runs" every expression on {} while the dialect parses
    # (on the server's event loop): a 330-character expression doubles 40 times.
    assert plan_in_child(params, dialect) == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("field", "head"),
    [
        ("decode", LOCAL_HEAD),  # native _decoding: str(value)
        ("optional", LOCAL_HEAD),  # common.parse_bool: str(value)
        ("auth", GCP_HEAD),  # gcp.native_ref: f"{raw_auth!r}"
        ("useVMManagedIdentity", AZURE_HEAD),  # azure.native_ref -> parse_bool: str(value)
    ],
    ids=["decode", "optional", "gcp-auth", "azure-useVMManagedIdentity"],
)
def test_yaml_alias_bomb_in_native_objects_is_rejected_without_expanding_it(
    field: str, head: list[str]
) -> None:
    params = {"objects": alias_bomb(9, field, head)}  # 10**9 leaves once str()-ed
    assert plan_in_child(params, "native") == "INVALID_ARGUMENT"


def test_alias_amplified_parameter_gets_a_short_invalid_argument_over_grpc(
    srv: Server,
) -> None:
    # 10**4-fold: small enough to finish, big enough that the echoed repr() overflows
    # gRPC's metadata limit, so the driver sees RESOURCE_EXHAUSTED, not the cause.
    err = rpc_error(srv, {"objects": alias_bomb(4, "decode", LOCAL_HEAD)})
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert len(err.details() or "") < 4096
    assert srv.version().version == "v1alpha1"


# -- 2. deep nesting and parser errors: INVALID_ARGUMENT, never INTERNAL --------------

DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("dialect", "params"),
    [
        ("native", {"objects": DEEP}),
        ("aws", {"objects": DEEP, "region": "us-east-1"}),
        ("azure", {"objects": DEEP, "keyvaultName": "kv1", "tenantID": "t"}),
        ("gcp", {"secrets": DEEP}),
        (
            "native",
            {
                "objects": "- backend: local\n  name: plain.txt\n  extract:\n"
                "  - path: out\n    jmesPath: '" + "(" * 3000 + "a" + ")" * 3000 + "'"
            },
        ),
        (
            "aws",
            {
                "region": "us-east-1",
                "objects": "- objectName: db\n  objectType: secretsmanager\n"
                "  objectVersion: " + "1" * 5000,
            },
        ),
    ],
    ids=[
        "native-yaml",
        "aws-yaml",
        "azure-yaml",
        "gcp-yaml",
        "native-jmespath-parens",
        "aws-5000-digit-integer",
    ],
)
def test_pathological_parameters_are_invalid_argument_not_uncaught(
    dialect: str, params: dict[str, str]
) -> None:
    assert plan_code(params, dialect) == "INVALID_ARGUMENT"


def test_deeply_nested_tokens_attribute_is_invalid_argument() -> None:
    # The tokens key can come from the pod's volumeAttributes (docs/protocol.md §2.2).
    request = driver_request({"objects": HELLO})
    attributes = json.loads(request.attributes)
    attributes[protocol.TOKENS_KEY] = "[" * 100_000 + "]" * 100_000
    request.attributes = json.dumps(attributes)
    with pytest.raises(KeyferryError) as info:
        protocol.decode(request)
    assert info.value.code is Code.INVALID_ARGUMENT


def test_deeply_nested_parameters_get_invalid_argument_over_grpc(srv: Server) -> None:
    err = rpc_error(srv, {"objects": DEEP})
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "objects" in (err.details() or "")
    assert srv.version().version == "v1alpha1"


@pytest.mark.parametrize(
    ("name", "extract"),
    [
        ("bigint.json", "jsonKey: user"),
        ("bigint.json", "jmesPath: user"),
        ("badfloat.yaml", "yamlKey: user"),
    ],
    ids=["json-5000-digits", "jmespath-5000-digits", "yaml-bad-float"],
)
def test_unparseable_secret_document_fails_that_object_with_invalid_argument(
    srv: Server, name: str, extract: str
) -> None:
    # A ValueError that is not a JSONDecodeError/YAMLError escapes render() and turns
    # the whole mount into an anonymous INTERNAL "incident" instead of naming the object.
    err = rpc_error(
        srv, {"objects": f"- {{backend: local, name: {name}, extract: [{{path: x, {extract}}}]}}"}
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert name in (err.details() or "")


@pytest.mark.parametrize(
    ("name", "extract", "written"),
    [
        # yaml.v3 reads a number beyond float range as text, so the document is valid.
        ("bigint.yaml", "yamlKey: user", b"app"),
        # Go's encoding/json writes U+FFFD for a lone surrogate escape.
        ("surrogate.json", "jsonKey: user", b"\xef\xbf\xbd"),
    ],
)
def test_documents_the_official_providers_read_are_written_like_them(
    srv: Server, name: str, extract: str, written: bytes
) -> None:
    resp = srv.mount(
        "keyferry",
        {"objects": f"- {{backend: local, name: {name}, extract: [{{path: x, {extract}}}]}}"},
    )
    assert [(f.path, f.contents) for f in resp.files] == [("x", written)]


def test_overlong_local_name_is_a_user_error_not_internal(srv: Server) -> None:
    err = rpc_error(srv, {"objects": "- {backend: local, name: " + "a" * 300 + ", path: x}"})
    assert err.code() is not grpc.StatusCode.INTERNAL, err.details()


# -- 3. log and audit integrity ---------------------------------------------------------


def test_one_tenants_secret_values_cannot_blank_another_tenants_audit_record(
    srv: Server,
) -> None:
    # Tenant A puts the string "team-b" in its nodePublishSecretRef Secret; the global
    # redactor then scrubs it from every later log line, hiding team-b's mounts.
    srv.mount("keyferry", {"objects": HELLO}, secrets={"anything": "team-b"})
    srv.mount(
        "keyferry",
        {"objects": HELLO},
        pod=("team-b", "api-0", "22222222-2222-3333-4444-555555555555", "api"),
    )
    records = [json.loads(line)["audit"] for line in srv.logs if '"audit"' in line]
    assert records[-1]["pod"]["namespace"] == "team-b"


# -- 4. azure: a bad tenantID from the class -------------------------------------------


@pytest.fixture
def azure(tmp_path: Path) -> Iterator[tuple[Server, FakeAzure]]:
    kube = FakeKube()
    try:
        with fake_azure(str(tmp_path)) as fake:
            fake.entra.federate("app-1", "team-a", "web")
            fake.vault.grant_reader("kv1", "app-1")
            with running_server(
                tmp_path,
                providers="keyferry,azure",
                backends={"azure": fake.settings(retry_backoff_factor=0.01)},
                kubernetes=kube.settings(),
                cache_ttl_seconds=0,
            ) as s:
                yield s, fake
    finally:
        kube.close()


@pytest.mark.parametrize(
    "identity",
    [
        {"params": {"clientID": "app-1"}, "secrets": None},
        {"params": {}, "secrets": {"clientid": "sp-1", "clientsecret": "CANARY-sp-secret-1"}},
    ],
    ids=["workload-identity", "service-principal"],
)
def test_azure_tenant_id_with_path_characters_is_rejected_before_any_token_is_sent(
    azure: tuple[Server, FakeAzure], identity: dict[str, Any]
) -> None:
    # tenantID goes unchecked into the Entra token URL: with workload identity the pod's
    # service-account token is POSTed to "/steal/oauth2/v2.0/token" on the authority
    # host; with a service principal azure-identity raises ValueError -> INTERNAL.
    srv, fake = azure
    fake.vault.add_secret("kv1", "db", "pw")
    with pytest.raises(grpc.RpcError) as info:
        srv.mount(
            "azure",
            {
                "keyvaultName": "kv1",
                "tenantID": "x/../../steal",
                "objects": azure_objects("objectName: db\nobjectType: secret"),
                **identity["params"],
            },
            tokens={AZURE_AUD: pod_token()},
            pod=AZURE_POD,
            secrets=identity["secrets"],
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "tenantID" in (info.value.details() or "")
    assert fake.entra.token_requests == 0
    assert not [r for r in fake.entra.requests if "steal" in r]


def test_azure_good_tenant_still_mounts(azure: tuple[Server, FakeAzure]) -> None:
    """Regression guard for the fixture above: the same class with the real tenant works."""
    srv, fake = azure
    fake.vault.add_secret("kv1", "db", "pw")
    resp = srv.mount(
        "azure",
        {
            "keyvaultName": "kv1",
            "tenantID": TENANT,
            "clientID": "app-1",
            "objects": azure_objects("objectName: db\nobjectType: secret"),
        },
        tokens={AZURE_AUD: pod_token()},
        pod=AZURE_POD,
    )
    assert [(f.path, f.contents) for f in resp.files] == [("db", b"pw")]


def test_azure_credentials_of_one_service_account_are_not_reused_for_another(
    azure: tuple[Server, FakeAzure],
) -> None:
    """Regression guard: same clientID and tenant, a different pod ServiceAccount whose
    subject the federated credential does not trust, right after a successful mount
    that left a cached Entra token behind."""
    srv, fake = azure
    fake.vault.add_secret("kv1", "db", "pw")
    params = {
        "keyvaultName": "kv1",
        "tenantID": TENANT,
        "clientID": "app-1",
        "objects": azure_objects("objectName: db\nobjectType: secret"),
    }
    ok = srv.mount("azure", params, tokens={AZURE_AUD: pod_token()}, pod=AZURE_POD)
    assert [f.contents for f in ok.files] == [b"pw"]
    assert fake.entra.token_requests == 1
    other = ("team-b", "api-0", "33333333-2222-3333-4444-555555555555", "web")
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("azure", params, tokens={AZURE_AUD: pod_token("team-b", "web")}, pod=other)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # Entra itself refused it (no cached token answered in its place): team-b/web has no
    # federated credential on app-1.
    assert fake.entra.errors[70021] == 1
    assert "system:serviceaccount:team-b:web" in (info.value.details() or "")
    # ...and a token for the right subject cannot be replayed under another pod's identity.
    with pytest.raises(grpc.RpcError) as replay:
        srv.mount("azure", params, tokens={AZURE_AUD: pod_token()}, pod=other)
    assert replay.value.code() is grpc.StatusCode.UNAUTHENTICATED
