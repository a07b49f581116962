"""Template objects end to end on the native socket: values from AWS Secrets Manager,
SSM and a local file rendered into one file, through a real keyferry server, the aws
backend, moto behind the strict proxy and the fake Kubernetes API."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.harness import running_server
from keyferry_fakes.kube import FakeKube
from provider.cli import manifest
from tests import REPO
from tests.clouds.aws.test_e2e import files, irsa, versions

CANARY = "CANARY-aws-template-51c0de"


def server(tmp_path: Path, proxy: AwsFaults, kube: FakeKube, root: Path | None = None) -> Any:
    return running_server(
        tmp_path,
        providers="keyferry",
        backends={"aws": {"endpoint_url": proxy.url}},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
        **({"local_root": root} if root else {}),
    )


def seeded() -> tuple[str, str, Any]:
    """A Secrets Manager secret and an SSM parameter under fresh names."""
    sm, ssm = seed_clients("us-east-1")
    suffix = uuid.uuid4().hex[:8]
    db, url = f"prod/db-{suffix}", f"/prod/api-url-{suffix}"
    sm.create_secret(Name=db, SecretString=json.dumps({"username": "app", "password": CANARY}))
    ssm.put_parameter(Name=url, Value="https://api.example.com/v1?a=1&b=2", Type="String")
    return db, url, sm


def example_params(db: str, url: str) -> dict[str, str]:
    (spc,) = list(manifest.load(REPO / "examples" / "aws" / "template.yaml"))
    assert not isinstance(spc, Exception)
    objects = spc.parameters["objects"].replace("prod/db", db).replace("/prod/api-url", url)
    return {**spc.parameters, "objects": objects}


def test_the_template_example_mounts_one_env_file_and_rotates_with_its_inputs(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    db, url, sm = seeded()
    params = example_params(db, url)
    with server(tmp_path, proxy, kube) as srv:
        first = srv.mount("keyferry", params, tokens=irsa())
        (env,) = first.files
        assert env.path == "app.env" and env.mode == 0o600
        assert (
            env.contents
            == (
                f"# rendered by keyferry from {db} and {url}\n"
                f"DB_USER=app\nDB_PASSWORD={CANARY}\n"
                "API_URL='https://api.example.com/v1?a=1&b=2'\n"
            ).encode()
        )
        before = versions(first)
        assert set(before) == {"db/user", "api-url", "app.env"}
        assert srv.mount("keyferry", params, tokens=irsa()).object_version == first.object_version
        sm.put_secret_value(
            SecretId=db, SecretString=json.dumps({"username": "u2", "password": "x"})
        )
        rotated = srv.mount("keyferry", params, tokens=irsa())
        after = versions(rotated)
        assert after["api-url"] == before["api-url"]
        assert after["db/user"] != before["db/user"] and after["app.env"] != before["app.env"]
        assert b"DB_USER=u2\nDB_PASSWORD=x\n" in files(rotated)["app.env"]
        haystack = "\n".join(srv.logs) + srv.metrics_text()
    assert CANARY not in haystack


def test_one_file_from_a_local_file_and_two_aws_services(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    db, url, _ = seeded()
    root = tmp_path / "root"
    root.mkdir()
    (root / "app.properties.in").write_text("log.level=debug\n")
    objects = [
        {"backend": "local", "name": "app.properties.in", "write": False},
        {
            "backend": "aws",
            "service": "secretsmanager",
            "name": db,
            "region": "us-east-1",
            "path": "db.json",
            "extract": [{"path": "db/password", "jsonKey": "password", "write": False}],
        },
        {"backend": "aws", "service": "ssm", "name": url, "region": "us-east-1", "write": False},
        {
            "template": '{{ values["app.properties.in"] }}'
            'db.password={{ values["db/password"] | json }}\n'
            'api.url={{ values["' + url.lstrip("/") + '"] }}\n',
            "path": "conf/app.properties",
        },
    ]
    with server(tmp_path, proxy, kube, root) as srv:
        resp = srv.mount("keyferry", {"objects": json.dumps(objects)}, tokens=irsa())
    got = files(resp)
    assert set(got) == {"db.json", "conf/app.properties"}  # db.json is written, its extract not
    assert (
        got["conf/app.properties"]
        == (
            f'log.level=debug\ndb.password="{CANARY}"\napi.url=https://api.example.com/v1?a=1&b=2\n'
        ).encode()
    )


def test_an_input_the_identity_may_not_read_fails_the_mount_and_no_file_is_rendered(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    db, url, _ = seeded()
    proxy.fail("GetSecretValue", "AccessDeniedException", 400)
    proxy.fail("BatchGetSecretValue", "AccessDeniedException", 400)
    with server(tmp_path, proxy, kube) as srv:
        with pytest.raises(grpc.RpcError) as err:
            srv.mount("keyferry", example_params(db, url), tokens=irsa())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        details = err.value.details() or ""
        assert "objects[0]" in details and "template" not in details
        assert CANARY not in details


def test_a_template_over_version_history_accepts_the_old_and_the_new_password(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    sm, _ = seed_clients("us-east-1")
    name = f"prod/rotating-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString=json.dumps({"password": "first"}))
    objects = [
        {
            "backend": "aws",
            "service": "secretsmanager",
            "name": name,
            "region": "us-east-1",
            "versionHistory": 2,
            "write": False,
            "extract": [{"path": "pw", "jsonKey": "password"}],
        },
        {
            "template": "PASSWORD={{ values['pw/0'] }}\n"
            "OLD_PASSWORD={{ values['pw/1'] | default('') }}\n",
            "path": "app.env",
        },
    ]
    params = {"objects": json.dumps(objects)}
    with server(tmp_path, proxy, kube) as srv:
        one = srv.mount("keyferry", params, tokens=irsa())
        assert files(one) == {"app.env": b"PASSWORD=first\nOLD_PASSWORD=\n"}
        sm.put_secret_value(SecretId=name, SecretString=json.dumps({"password": "second"}))
        two = srv.mount("keyferry", params, tokens=irsa())
    assert files(two) == {"app.env": b"PASSWORD=second\nOLD_PASSWORD=first\n"}
    assert versions(two)["app.env"] != versions(one)["app.env"]
    assert set(versions(two)) == {"pw/0", "pw/1", "app.env"}
