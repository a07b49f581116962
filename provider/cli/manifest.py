"""SecretProviderClass manifests: load them, and build requests the way the driver does.

Shared by ``keyferry mount``, ``keyferry validate`` and the demo, so local
checks see exactly what a Mount on a node would see.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import registry
from ..errors import InvalidArgument, KeyferryError
from ..model import DEFAULT_MODE, Mount, Plan, Pod, Token
from ..pipeline import make_plan
from ..protocol import (
    POD_NAME,
    POD_NAMESPACE,
    POD_UID,
    SERVICE_ACCOUNT,
    TOKENS_KEY,
    attributes_json,
)

KNOWN_AUDIENCES = (
    "sts.amazonaws.com",
    "pods.eks.amazonaws.com",
    "api://AzureADTokenExchange",
    "api://AKSIdentityBinding",
)

# spec.provider -> dialect, for the socket names keyferry serves by default.
PROVIDER_DIALECTS = registry.SOCKETS


@dataclass(frozen=True)
class SecretProviderClass:
    name: str
    namespace: str
    provider: str
    parameters: Mapping[str, Any]
    source: str
    """``file:document N`` for messages."""


def load(
    path: str | Path, skipped: list[str] | None = None
) -> Iterator[SecretProviderClass | KeyferryError]:
    """Every SecretProviderClass in a multi-document YAML file, or an error per bad document.

    Other Kubernetes objects (a Deployment, a ServiceAccount...) are skipped; with
    ``skipped`` given, each is described there (``file: document N (Kind name)``).
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        yield InvalidArgument(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}")
        return
    for i, doc in enumerate(docs, start=1):
        source = f"{path}: document {i}"
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            yield InvalidArgument(f"{source}: expected a Kubernetes object (a mapping)")
            continue
        if doc.get("kind") != "SecretProviderClass":
            if skipped is not None:
                meta = doc.get("metadata")
                name = meta.get("name", "") if isinstance(meta, Mapping) else ""
                what = f"{doc['kind']} {name or '<unnamed>'}" if doc.get("kind") else "no kind"
                skipped.append(f"{source} ({what})")
            continue
        yield from_object(doc, source)


def select(path: str | Path, name: str | None = None) -> list[SecretProviderClass]:
    """The classes in a file (only those called ``name`` when given); the first bad
    document is raised as its :class:`KeyferryError`, an unreadable file as ``OSError``."""
    found = []
    for item in load(path):
        if isinstance(item, KeyferryError):
            raise item
        if name is None or item.name == name:
            found.append(item)
    return found


def from_object(doc: Mapping[str, Any], source: str) -> SecretProviderClass | KeyferryError:
    """One SecretProviderClass object (from a file or the API), checked as the API would."""
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    name = str(meta.get("name", "")) if isinstance(meta, Mapping) else ""
    source = f"{source} (SecretProviderClass {name or '<unnamed>'})"
    if not isinstance(spec, Mapping):
        return InvalidArgument(f"{source}: spec must be a mapping")
    params = spec.get("parameters")
    if not isinstance(params, Mapping) or not params:
        return InvalidArgument(
            f"{source}: spec.parameters must be a non-empty mapping (the driver refuses "
            "a class without parameters)"
        )
    bad_keys = [str(k) for k in params if not isinstance(k, str)]
    if bad_keys:
        return InvalidArgument(
            f"{source}: spec.parameters key {bad_keys[0]} must be a string; quote it"
        )
    bad = [str(k) for k, v in params.items() if not isinstance(v, str)]
    if bad:
        return InvalidArgument(
            f"{source}: spec.parameters.{bad[0]} must be a string; Kubernetes rejects "
            "non-string parameter values — quote it or use a block scalar '|'"
        )
    return SecretProviderClass(
        name=name,
        namespace=str(meta.get("namespace", "") or "") if isinstance(meta, Mapping) else "",
        provider=str(spec.get("provider", "")),
        parameters=dict(params),
        source=source,
    )


def driver_attributes(
    spc: SecretProviderClass,
    pod: Pod,
    *,
    volume_attributes: Mapping[str, str] | None = None,
    tokens: Mapping[str, str] | None = None,
    expiration: str = "",
) -> dict[str, str]:
    """The ``attributes`` map the driver builds (docs/protocol.md §2.2)."""
    attrs: dict[str, str] = dict(spc.parameters)
    attrs["secretProviderClass"] = spc.name
    attrs.update(volume_attributes or {})
    attrs.update(
        {
            POD_NAME: pod.name,
            POD_NAMESPACE: pod.namespace,
            POD_UID: pod.uid,
            SERVICE_ACCOUNT: pod.service_account,
            "csi.storage.k8s.io/ephemeral": "true",
        }
    )
    if tokens:
        attrs[TOKENS_KEY] = json.dumps(
            {aud: {"token": tok, "expirationTimestamp": expiration} for aud, tok in tokens.items()}
        )
    return attrs


def sync_controller_attributes(
    spc: SecretProviderClass,
    namespace: str,
    service_account: str,
    *,
    controller_pod: tuple[str, str] = ("", ""),
    tokens: Mapping[str, str] | None = None,
    expiration: str = "",
) -> dict[str, str]:
    """The ``attributes`` map the secrets-store-sync-controller builds for a SecretSync in
    ``namespace`` naming ``service_account`` (docs/sync-controller.md): the class's
    parameters only, its own pod's name and uid, the SecretSync's namespace and
    ServiceAccount, and its tokens as Go's json.Marshal writes them (none: no key)."""
    attrs: dict[str, str] = dict(spc.parameters)
    attrs.update(
        {
            POD_NAME: controller_pod[0],
            POD_UID: controller_pod[1],
            POD_NAMESPACE: namespace,
            SERVICE_ACCOUNT: service_account,
        }
    )
    if tokens:
        attrs[TOKENS_KEY] = json.dumps(
            {
                aud: {"token": tok, "expirationTimestamp": expiration}
                for aud, tok in sorted(tokens.items())
            },
            separators=(",", ":"),
        )
    return attrs


def encode_attributes(attributes: Mapping[str, str]) -> str:
    return attributes_json(attributes)


def dialect_for(provider: str, source: str) -> str:
    dialect = PROVIDER_DIALECTS.get(provider)
    if dialect is None:
        raise InvalidArgument(
            f"{source}: spec.provider {provider!r} is not a keyferry socket; use one of "
            + ", ".join(PROVIDER_DIALECTS)
        )
    return dialect


def static_plan(
    spc: SecretProviderClass, pod: Pod | None = None, *, dialect: str | None = None
) -> Plan:
    """Parse and check a class as a Mount would, without any backend call.

    ``dialect``: the one the server binds to ``spc.provider`` (its ``providers``
    setting); default: keyferry's own socket names (``keyferry``, ``aws``, ...).
    """
    dialect = dialect or dialect_for(spc.provider, spc.source)
    # A static check cannot know the pod's tokens; assume the driver is configured
    # to send one for every audience a dialect may need (tokens are request data).
    tokens = {aud: Token(aud, "validate-placeholder") for aud in KNOWN_AUDIENCES}
    mount = Mount(
        tokens=tokens,
        pod=pod
        or Pod(
            namespace=spc.namespace or "default", name="validate", uid="", service_account="default"
        ),
        parameters=dict(spc.parameters),
        default_mode=DEFAULT_MODE,
        secret_provider_class=spc.name,
        dialect=dialect,
        provider_name=spc.provider,
    )
    return make_plan(mount)
