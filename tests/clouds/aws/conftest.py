"""The AWS tests' pod: ServiceAccount team-a/web, annotated with role/web, which trusts it;
``make_stack`` builds AwsStacks against the proxy and closes them after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keyferry_fakes.aws_faults import AwsFaults
from keyferry_fakes.aws_stack import ROLE, AwsStack
from keyferry_fakes.kube import FakeKube


@pytest.fixture
def proxy(aws_proxy: AwsFaults) -> AwsFaults:
    aws_proxy.trust(ROLE, "team-a", "web")  # the IRSA trust policy of role/web
    return aws_proxy


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account("team-a", "web", {"eks.amazonaws.com/role-arn": ROLE})
    return kube


MakeStack = Callable[..., AwsStack]


@pytest.fixture
def make_stack(proxy: AwsFaults, kube: FakeKube) -> Iterator[MakeStack]:
    stacks: list[AwsStack] = []

    def make(**kwargs: Any) -> AwsStack:
        kwargs.setdefault("endpoint", proxy.url)
        kwargs.setdefault("kube", kube.settings())
        stack = AwsStack(**kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
