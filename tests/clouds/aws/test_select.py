"""``select`` on the native socket with ``backend: aws``: Secrets Manager by name prefix
and tags (ListSecrets), SSM by path (GetParametersByPath), through a real keyferry server,
boto3, the strict SigV4/IAM proxy and moto. The list actions must be granted to the role
(keyferry_fakes/aws_faults.py ``grant``), as in IAM."""

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
from tests.clouds.aws.test_e2e import ROLE, files, irsa, rollout, versions
from tests.clouds.aws.test_sync_controller import NS, SA, controller_token

CANARY = "CANARY-aws-selected-5be01c"
LIST_SECRETS = "secretsmanager:ListSecrets"
BY_PATH = "ssm:GetParametersByPath"


def server(tmp_path: Path, proxy: AwsFaults, kube: FakeKube, **config: Any) -> Any:
    return running_server(
        tmp_path,
        providers="keyferry",
        backends={"aws": {"endpoint_url": proxy.url, "region": "us-east-1"}},
        kubernetes=kube.settings(),
        **{"cache_ttl_seconds": 0, **config},
    )


def native(*items: dict[str, Any]) -> dict[str, str]:
    return {"objects": json.dumps(list(items))}


def mount(srv: Any, params: dict[str, str]) -> Any:
    return srv.mount("keyferry", params, tokens=irsa())


def failure(srv: Any, params: dict[str, str]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        mount(srv, params)
    return err.value.code(), err.value.details() or ""


@pytest.fixture
def prefix() -> str:
    return f"sel-{uuid.uuid4().hex[:8]}/"


def test_a_name_prefix_mounts_each_secret_below_it_with_its_version(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    sm, _ = seed_clients("us-east-1")
    made = {
        rel: sm.create_secret(Name=prefix + rel, SecretString=f"{CANARY}-{rel}")
        for rel in ("db-password", "api-key", "nested/tls-key")
    }
    sm.create_secret(Name=prefix.rstrip("/") + "-sibling", SecretString="not below the prefix")
    sm.create_secret(Name=prefix + "going", SecretString="scheduled for deletion")
    sm.delete_secret(SecretId=prefix + "going", RecoveryWindowInDays=7)
    proxy.grant(ROLE, LIST_SECRETS)
    item = {"backend": "aws", "select": {"namePrefix": prefix}, "path": "app", "mode": "0400"}
    with server(tmp_path, proxy, kube) as srv:
        resp = mount(srv, native(item))
        haystack = "\n".join(srv.logs) + srv.metrics_text()
    assert srv.logs and CANARY not in haystack
    assert files(resp) == {f"app/{rel}": f"{CANARY}-{rel}".encode() for rel in made}
    assert {f.mode for f in resp.files} == {0o400}
    got = versions(resp)
    assert {k: v for k, v in got.items() if k != "app"} == {
        f"app/{rel}": m["VersionId"] for rel, m in made.items()
    }
    assert got["app"].startswith("hmac-sha256:")
    # One page of ListSecrets, then one BatchGetSecretValue for the three values.
    assert proxy.count("ListSecrets") == 1
    assert proxy.count("BatchGetSecretValue") == 1 and proxy.count("GetSecretValue") == 0


def test_the_default_directory_is_the_prefix_and_a_selection_mixes_with_plain_objects(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    sm, _ = seed_clients("us-east-1")
    sm.create_secret(Name=prefix + "a", SecretString="a")
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=plain, SecretString="p")
    proxy.grant(ROLE, LIST_SECRETS)
    params = native(
        {"backend": "aws", "service": "secretsmanager", "select": {"namePrefix": prefix}},
        {"backend": "aws", "service": "secretsmanager", "name": plain, "path": "plain"},
    )
    with server(tmp_path, proxy, kube) as srv:
        resp = mount(srv, params)
    assert files(resp) == {prefix + "a": b"a", "plain": b"p"}
    assert proxy.count("BatchGetSecretValue") == 1  # the member and the plain secret


def test_tags_select_exactly_although_the_service_matches_each_by_prefix(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    team = uuid.uuid4().hex[:8]
    sm, _ = seed_clients("us-east-1")

    def secret(name: str, tags: dict[str, str]) -> None:
        sm.create_secret(
            Name=prefix + name,
            SecretString=name,
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )

    secret("both", {"team": team, "env": "prod"})
    secret("team-only", {"team": team})
    secret("longer-value", {"team": team + "x", "env": "prod"})  # tag-value prefix match
    secret("swapped", {"team": "prod", "env": team})  # key and value on different tags
    proxy.grant(ROLE, LIST_SECRETS)
    item = {"backend": "aws", "select": {"tags": {"team": team, "env": "prod"}}, "path": "t"}
    with server(tmp_path, proxy, kube) as srv:
        resp = mount(srv, native(item))
    assert files(resp) == {f"t/{prefix}both": b"both"}


def test_a_listing_the_role_may_not_make_is_permission_denied_naming_the_action(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    sm, _ = seed_clients("us-east-1")
    sm.create_secret(Name=prefix + "a", SecretString=CANARY)
    with server(tmp_path, proxy, kube) as srv:
        code, details = failure(srv, native({"backend": "aws", "select": {"namePrefix": prefix}}))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "ListSecrets" in details and f"{ROLE}" in details
        assert f"needs {LIST_SECRETS}" in details
        assert [r.operation for r in proxy.refusals] == ["ListSecrets"]
        assert proxy.count("BatchGetSecretValue") == 0  # nothing fetched
        code, details = failure(
            srv, native({"backend": "aws", "select": {"path": "/" + prefix}, "path": "p"})
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert f"needs {BY_PATH}" in details
        assert CANARY not in details and CANARY not in "\n".join(srv.logs)


def test_ssm_path_selects_direct_children_or_the_whole_tree_in_one_call_per_page(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    _, ssm = seed_clients("us-east-1")
    base = "/" + prefix + "app"
    ssm.put_parameter(Name=f"{base}/url", Value="https://db", Type="String")
    ssm.put_parameter(Name=f"{base}/password", Value=CANARY, Type="SecureString")
    ssm.put_parameter(Name=f"{base}/tls/key", Value="k", Type="SecureString")
    ssm.put_parameter(Name=f"{base}-other", Value="x", Type="String")
    proxy.grant(ROLE, BY_PATH)
    flat = {"backend": "aws", "select": {"path": base}, "path": "cfg"}
    tree = {"backend": "aws", "select": {"path": base + "/", "recursive": "true"}, "path": "all"}
    with server(tmp_path, proxy, kube, cache_ttl_seconds=60) as srv:
        resp = mount(srv, native(flat, tree))
    assert files(resp) == {
        "cfg/password": CANARY.encode(),
        "cfg/url": b"https://db",
        "all/password": CANARY.encode(),
        "all/url": b"https://db",
        "all/tls/key": b"k",
    }
    assert versions(resp)["all/tls/key"] == "1"
    # The values came with the listing (decrypted): no GetParameters at all.
    assert proxy.count("GetParametersByPath") == 2 and proxy.count("GetParameters") == 0
    sent = [json.loads(r.body) for r in proxy.requests if r.operation == "GetParametersByPath"]
    assert all(body["WithDecryption"] is True for body in sent)
    assert sorted(body["Recursive"] for body in sent) == [False, True]


@pytest.fixture
def one_secret(proxy: AwsFaults, prefix: str) -> dict[str, str]:
    """A prefix with one secret below it, the role granted ListSecrets: the class."""
    sm, _ = seed_clients("us-east-1")
    sm.create_secret(Name=prefix + "a", SecretString="a")
    proxy.grant(ROLE, LIST_SECRETS)
    return native({"backend": "aws", "select": {"namePrefix": prefix}, "path": "s"})


def test_listings_follow_every_page_and_values_are_read_twenty_a_call(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    sm, ssm = seed_clients("us-east-1")
    for i in range(105):  # two ListSecrets pages of 100
        sm.create_secret(Name=f"{prefix}s{i:03}", SecretString=f"v{i}")
    base = "/" + prefix.rstrip("/")
    for i in range(12):  # two GetParametersByPath pages of 10
        ssm.put_parameter(Name=f"{base}/p{i:02}", Value=f"p{i}", Type="SecureString")
    proxy.grant(ROLE, LIST_SECRETS, BY_PATH)
    params = native(
        {"backend": "aws", "select": {"namePrefix": prefix}, "path": "sm"},
        {"backend": "aws", "select": {"path": base}, "path": "ssm"},
    )
    with server(tmp_path, proxy, kube, max_selected_objects=200, cache_ttl_seconds=60) as srv:
        got = files(mount(srv, params))
    assert len(got) == 117
    assert got["sm/s104"] == b"v104" and got["ssm/p11"] == b"p11"
    assert proxy.count("ListSecrets") == 2 and proxy.count("GetParametersByPath") == 2
    assert proxy.count("BatchGetSecretValue") == 6  # ceil(105 / 20)
    assert proxy.count("GetSecretValue") == 0 and proxy.count("GetParameters") == 0


def test_a_listing_past_the_cap_stops_at_the_page_that_crossed_it(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    _, ssm = seed_clients("us-east-1")
    base = "/" + prefix.rstrip("/")
    for i in range(25):
        ssm.put_parameter(Name=f"{base}/p{i:02}", Value="v", Type="String")
    proxy.grant(ROLE, BY_PATH)
    params = native({"backend": "aws", "select": {"path": base}, "path": "p"})
    with server(tmp_path, proxy, kube, max_selected_objects=5) as srv:
        code, details = failure(srv, params)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"SSM parameters directly under '{base}': more than 5 objects match" in details
    assert proxy.count("GetParametersByPath") == 1


def test_listings_are_cached_per_identity_and_counted(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, one_secret: dict[str, str]
) -> None:
    with server(tmp_path, proxy, kube, cache_ttl_seconds=300) as srv:
        first = mount(srv, one_secret)
        assert versions(mount(srv, one_secret)) == versions(first)
        assert proxy.count("ListSecrets") == 1 and proxy.count("GetSecretValue") == 1
        events = 'keyferry_cache_events_total{cache="aws-listings",result="%s"}'
        assert srv.metric(events % "miss") == 1 and srv.metric(events % "hit") == 1
        calls = (
            'keyferry_backend_requests_total{backend="aws",operation="ListSecrets",outcome="ok"}'
        )
        assert srv.metric(calls) == 1


def test_concurrent_identical_mounts_share_one_listing(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str, one_secret: dict[str, str]
) -> None:
    pods = 6
    with server(tmp_path, proxy, kube, cache_ttl_seconds=300) as srv:
        mount(srv, native({"backend": "aws", "service": "secretsmanager", "name": prefix + "a"}))
        proxy.clear()
        proxy.delay["ListSecrets"] = 0.5  # keep the first listing in flight
        assert rollout(srv, "keyferry", one_secret, pods) == [1] * pods
        coalesced = srv.metric(
            'keyferry_cache_events_total{cache="aws-listings",result="coalesced"}'
        )
    assert 1 <= proxy.count("ListSecrets") < pods
    assert coalesced is not None and coalesced >= 1


def test_rotation_sees_secrets_added_and_removed(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str, one_secret: dict[str, str]
) -> None:
    sm, _ = seed_clients("us-east-1")
    with server(tmp_path, proxy, kube) as srv:
        before = versions(mount(srv, one_secret))
        sm.create_secret(Name=prefix + "b", SecretString="b")
        added = versions(mount(srv, one_secret))
        assert set(added) == {"s", "s/a", "s/b"} and added["s"] != before["s"]
        sm.delete_secret(SecretId=prefix + "b", RecoveryWindowInDays=7)
        assert versions(mount(srv, one_secret)) == before


def test_a_secret_deleted_while_its_listing_is_cached_fails_the_mount_never_drops_files(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    """Even for an optional selection: skipping it would remove its files from the volume."""
    sm, _ = seed_clients("us-east-1")
    for rel in ("a", "b"):
        sm.create_secret(Name=prefix + rel, SecretString=rel)
    proxy.grant(ROLE, LIST_SECRETS)
    item = {"backend": "aws", "select": {"namePrefix": prefix}, "path": "s", "optional": True}
    with server(tmp_path, proxy, kube, cache_ttl_seconds=300) as srv:
        assert set(files(mount(srv, native(item)))) == {"s/a", "s/b"}
        sm.delete_secret(SecretId=prefix + "b", ForceDeleteWithoutRecovery=True)
        srv.emb.provider.services.values.clear()  # values expired, the listing not yet
        code, details = failure(srv, native(item))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "selected object 'b'" in details and "removed after the selection was listed" in details


def test_hostile_names_and_too_many_matches_fail_naming_them(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    sm, _ = seed_clients("us-east-1")
    for rel in ("ok", "../escape", "a/../../b"):
        sm.create_secret(Name=prefix + rel, SecretString=CANARY)
    proxy.grant(ROLE, LIST_SECRETS)
    params = native({"backend": "aws", "select": {"namePrefix": prefix}, "path": "s"})
    with server(tmp_path, proxy, kube, max_selected_objects=2) as srv:
        code, details = failure(srv, params)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than 2 objects" in details and "max_selected_objects" in details
        assert proxy.count("BatchGetSecretValue") == 0
    with server(tmp_path, proxy, kube) as srv:
        code, details = failure(srv, params)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'../escape'" in details and "'a/../../b'" in details
    assert "'..' element" in details and CANARY not in details


def test_a_name_colliding_with_another_member_fails_naming_both(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    sm, _ = seed_clients("us-east-1")
    sm.create_secret(Name=prefix + "db", SecretString="file")
    sm.create_secret(Name=prefix + "db/password", SecretString="needs db as a directory")
    proxy.grant(ROLE, LIST_SECRETS)
    params = native({"backend": "aws", "select": {"namePrefix": prefix}, "path": "s"})
    with server(tmp_path, proxy, kube) as srv:
        code, details = failure(srv, params)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'s/db/password' needs a directory 's/db'" in details


@pytest.mark.parametrize(
    ("select", "extra", "expected"),
    [
        ({"namePrefix": ""}, {}, "namePrefix is empty"),
        ({"path": "/"}, {}, "would select every parameter"),
        ({"path": "app"}, {}, "starts with '/'"),
        ({"namePrefix": "a/", "path": "/a"}, {}, "mixes Secrets Manager keys"),
        ({"namePrefix": "a/"}, {"service": "ssm"}, "mixes Secrets Manager keys"),
        ({"namePrefix": "a/"}, {"versionStage": "AWSPREVIOUS"}, "'versionStage' does not apply"),
        ({"namePrefix": "a/"}, {"failoverRegion": "us-east-2"}, "'failoverRegion' does not"),
        ({"namePrefix": "a/"}, {"name": "a"}, "either 'name'"),
        ({"namePrefx": "a/"}, {}, "did you mean 'namePrefix'"),
        ({"tags": {"team": "a"}}, {}, "'path' is required"),
        ({"tags": "team=a"}, {"path": "t"}, "mapping of tag key to value"),
        ({"recursive": "true"}, {}, "needs 'path' for SSM"),
        # ListSecrets reads a leading '!' as NOT: every other secret would be paged through
        ({"namePrefix": "!app/"}, {"path": "s"}, "namePrefix '!app/' starts with '!'"),
        ({"tags": {"!team": "a"}}, {"path": "s"}, "tag key '!team' starts with '!'"),
        ({"tags": {"team": "!a"}}, {"path": "s"}, "tag value '!a' starts with '!'"),
    ],
)
def test_bad_aws_selections_are_invalid_argument_before_any_call(
    tmp_path: Path,
    proxy: AwsFaults,
    kube: FakeKube,
    select: dict[str, Any],
    extra: dict[str, Any],
    expected: str,
) -> None:
    with server(tmp_path, proxy, kube) as srv:
        code, details = failure(srv, native({"backend": "aws", "select": select, **extra}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details
    assert proxy.requests == []


def test_the_sync_controller_mounts_a_selection_without_any_pod_or_node_lookup(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, one_secret: dict[str, str]
) -> None:
    tokens = controller_token()
    with server(tmp_path, proxy, kube) as srv:
        sync = srv.sync_mount(
            "keyferry", one_secret, namespace=NS, service_account=SA, tokens=tokens
        )
    assert files(sync) == {"s/a": b"a"}
    assert set(kube.requests) == {f"/api/v1/namespaces/{NS}/serviceaccounts/{SA}"}
    assert proxy.count("ListSecrets") == 1


def test_a_tag_that_listsecrets_cannot_filter_by_is_checked_here_only(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    # Tag values may hold any letter ("café"); ListSecrets' filter values only ASCII
    # letters, digits and " :_@/+=.-". Such a tag is left out of the filters (which only
    # narrow the listing) and checked on each listed secret, like every tag.
    sm, _ = seed_clients("us-east-1")
    for name, owner in (("mine", "équipe-é"), ("theirs", "équipe-x")):
        tags = [{"Key": "owner", "Value": owner}]
        sm.create_secret(Name=prefix + name, SecretString=name, Tags=tags)
    proxy.grant(ROLE, LIST_SECRETS)
    item = {"backend": "aws", "select": {"namePrefix": prefix, "tags": {"owner": "équipe-é"}}}
    with server(tmp_path, proxy, kube) as srv:
        resp = mount(srv, native({**item, "path": "s"}))
    assert files(resp) == {"s/mine": b"mine"}
    assert proxy.refusals == []
