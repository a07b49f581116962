"""provider.plans.PlanCache: a parsed plan is reused only for a Mount that gives the same
answers to everything its dialect read, so no pod gets a plan built from another pod's
secrets or tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from provider.clouds.azure.ref import WORKLOAD_AUDIENCE, AzureRef
from provider.clouds.gcp.ref import KEY_JSON, GcpRef
from provider.errors import Code, InvalidArgument, KeyferryError
from provider.model import Mount, ObjectSpec, Output, Plan, Pod, Token
from provider.pipeline import make_plan
from provider.plans import PlanCache

AZURE = {
    "keyvaultName": "kv-one",
    "tenantID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "objects": "array:\n  - |\n    objectName: db\n    objectType: secret\n",
}
GCP = {"secrets": '- resourceName: "projects/p/secrets/db/versions/1"\n  path: db\n'}
NATIVE = {"objects": "- {backend: local, name: db/password}"}


def mount(
    params: Mapping[str, str],
    dialect: str,
    *,
    pod: str = "web-0",
    secrets: Mapping[str, str] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> Mount:
    return Mount(
        pod=Pod("team-a", pod, f"uid-{pod}", "web"),
        parameters=dict(params),
        tokens={a: Token(a, t) for a, t in (tokens or {}).items()},
        secrets=dict(secrets or {}),
        dialect=dialect,
    )


class Counting:
    """make_plan, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, m: Mount) -> Plan:
        self.calls += 1
        return make_plan(m)


def test_identical_parameters_are_parsed_once_across_pods() -> None:
    parse = Counting()
    cache = PlanCache(parse)
    first, cached = cache.get(mount(NATIVE, "native", pod="web-0"))
    assert not cached
    again, cached = cache.get(mount(NATIVE, "native", pod="web-1", tokens={"aud": "t1"}))
    assert cached and again is first
    assert parse.calls == 1
    other = {"objects": NATIVE["objects"] + "\n- {backend: local, name: db/user}"}
    assert cache.get(mount(other, "native"))[1] is False
    with pytest.raises(KeyferryError):  # the same text on another socket is parsed again
        cache.get(mount(NATIVE, "gcp"))
    assert parse.calls == 3


def test_failed_parses_are_not_kept() -> None:
    parse = Counting()
    cache = PlanCache(parse)
    bad = {"objects": "- {backend: local}"}
    for _ in range(2):
        with pytest.raises(KeyferryError):
            cache.get(mount(bad, "native"))
    assert parse.calls == 2 and len(cache) == 0


def _azure_ref(plan: Plan) -> AzureRef:
    ref = plan.objects[0].ref
    assert isinstance(ref, AzureRef)
    return ref


def test_a_plan_built_from_a_node_publish_secret_is_not_reused_with_another() -> None:
    """The azure dialect puts the service principal's client id from the pod's
    nodePublishSecretRef into the ref: another Secret must give another plan."""
    parse = Counting()
    cache = PlanCache(parse)
    one = {"clientid": "11111111-1111-1111-1111-111111111111", "clientsecret": "s1"}
    two = {"clientid": "22222222-2222-2222-2222-222222222222", "clientsecret": "s2"}
    plan_one, _ = cache.get(mount(AZURE, "azure", pod="a", secrets=one))
    plan_two, cached = cache.get(mount(AZURE, "azure", pod="b", secrets=two))
    assert not cached
    assert _azure_ref(plan_one).auth.client_id == one["clientid"]
    assert _azure_ref(plan_two).auth.client_id == two["clientid"]
    # the same Secret again (another pod of the same Deployment): reused
    again, cached = cache.get(mount(AZURE, "azure", pod="c", secrets=dict(one)))
    assert cached and again is plan_one
    # without any Secret the dialect falls back to the node's identity: parsed again
    plan_none, cached = cache.get(mount(AZURE, "azure", pod="d"))
    assert not cached and _azure_ref(plan_none).auth.mode == "auto"
    assert parse.calls == 3


def test_a_plan_that_needed_a_token_is_not_handed_to_a_pod_without_it() -> None:
    params = {**AZURE, "clientID": "33333333-3333-3333-3333-333333333333"}
    parse = Counting()
    cache = PlanCache(parse)
    plan, _ = cache.get(mount(params, "azure", tokens={WORKLOAD_AUDIENCE: "tok-a"}))
    assert _azure_ref(plan).auth.mode == "workload"
    # The dialect only asked whether the token is there: another pod's token shares it.
    again, cached = cache.get(mount(params, "azure", pod="b", tokens={WORKLOAD_AUDIENCE: "b"}))
    assert cached and again is plan and parse.calls == 1
    with pytest.raises(KeyferryError) as err:
        cache.get(mount(params, "azure", pod="no-token"))
    assert err.value.code is Code.FAILED_PRECONDITION
    assert WORKLOAD_AUDIENCE in err.value.message


def test_gcp_auth_follows_the_key_json_of_each_request() -> None:
    cache = PlanCache(make_plan)
    with_key, _ = cache.get(mount(GCP, "gcp", secrets={KEY_JSON: '{"type": "x"}'}))
    without, cached = cache.get(mount(GCP, "gcp", pod="other"))
    assert not cached
    refs = [p.objects[0].ref for p in (with_key, without)]
    assert all(isinstance(r, GcpRef) for r in refs)
    assert [r.auth for r in refs if isinstance(r, GcpRef)] == ["node-publish-secret", "pod-adc"]


@dataclass(frozen=True)
class _HoldsMount:
    mount: Mount


def test_a_plan_that_keeps_the_request_itself_is_never_reused() -> None:
    def parse(m: Mount) -> Plan:
        spec = ObjectSpec("x", "local", _HoldsMount(m), (Output("x"),), ("x",))
        return Plan("native", (spec,))

    cache = PlanCache(parse)
    first, _ = cache.get(mount(NATIVE, "native", pod="a"))
    second, cached = cache.get(mount(NATIVE, "native", pod="b"))
    assert not cached and len(cache) == 0
    assert second is not first


def test_the_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = PlanCache(make_plan, max_entries=3, max_bytes=10_000)
    for i in range(5):
        cache.get(mount({"objects": f"- {{backend: local, name: f{i}}}"}, "native"))
    assert len(cache) == 3
    huge = {"objects": "- {backend: local, name: big}\n" + "#" * 5000}
    cache.get(mount(huge, "native"))
    assert cache.get(mount(huge, "native"))[1] is False  # over a quarter of the budget
    assert len(cache) == 3


def test_a_reused_plan_is_the_plan_parsing_would_build() -> None:
    cache = PlanCache(make_plan)
    m = mount(NATIVE, "native")
    cache.get(m)
    cached, hit = cache.get(m)
    assert hit and cached == make_plan(m)
    with pytest.raises(InvalidArgument):
        make_plan(mount({"objects": "[]"}, "native"))
