"""The AWS tests' pod: ServiceAccount team-a/web, annotated with role/web, which trusts it."""

from __future__ import annotations

import pytest

from keyferry_fakes.aws_faults import AwsFaults
from keyferry_fakes.aws_stack import ROLE
from keyferry_fakes.kube import FakeKube


@pytest.fixture
def proxy(aws_proxy: AwsFaults) -> AwsFaults:
    aws_proxy.trust(ROLE, "team-a", "web")  # the IRSA trust policy of role/web
    return aws_proxy


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account("team-a", "web", {"eks.amazonaws.com/role-arn": ROLE})
    return kube
