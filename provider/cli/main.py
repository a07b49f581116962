"""``keyferry serve | mount | validate | doctor | demo | version``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from .. import __version__, config, sync_controller
from .._proto.v1alpha1 import service_pb2 as pb
from .._proto.v1alpha1 import service_pb2_grpc as pb_grpc
from ..errors import ConfigError, KeyferryError
from ..files import path_problem
from ..model import OutputFile, Pod
from ..observe import setup_logging
from . import manifest, secretsync

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / "examples" / "demo"


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="server configuration file (YAML)")
    p.add_argument("--socket-dir", help="directory for <name>.sock (default %(default)s)")
    p.add_argument("--providers", help="socket names, e.g. keyferry,aws,gcp,azure")
    p.add_argument("--http-address", help="host:port for /healthz /readyz /metrics; '' disables")
    p.add_argument("--local-root", help="root directory of the local backend")
    p.add_argument("--socket-mode", help="socket file mode, e.g. 0600 or 0660")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument("--grace-seconds", type=float, help="drain time on SIGTERM")
    p.add_argument("--mount-timeout-seconds", type=float, help="internal budget per Mount")
    p.add_argument("--max-response-bytes", type=int, help="encoded response budget")
    p.add_argument("--hmac-key-file", help="key for content-derived object versions")


def _load_config(args: argparse.Namespace, **extra: Any) -> config.Config:
    keys = (
        "socket_dir",
        "providers",
        "http_address",
        "local_root",
        "socket_mode",
        "log_level",
        "grace_seconds",
        "mount_timeout_seconds",
        "max_response_bytes",
        "hmac_key_file",
    )
    overrides = {k: getattr(args, k, None) for k in keys}
    overrides.update(extra)
    return config.load(getattr(args, "config", None), overrides=overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server import Provider

    cfg = _load_config(args)
    setup_logging(cfg.log_level)
    asyncio.run(Provider(cfg).serve_forever())
    # A backend call still stuck when the grace period ended holds a worker thread that
    # interpreter exit would wait for (as long as the SDK's read timeout). The server has
    # stopped and removed its sockets: leave now, with exit code 0.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"keyferry {__version__}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    failures = checked = 0
    written: dict[tuple[str, str], set[str]] = {}
    syncs: list[secretsync.SecretSync] = []
    for path in args.files:
        skipped: list[str] = []
        try:
            items = list(manifest.load(path, skipped))
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            failures += 1
            continue
        for item in items:
            if isinstance(item, KeyferryError):
                print(item.message, file=sys.stderr)
                failures += 1
                continue
            checked += 1
            try:
                plan = manifest.static_plan(item)
            except KeyferryError as exc:
                print(f"{item.source}: {exc.message}", file=sys.stderr)
                failures += 1
            else:
                rendered = f", {len(plan.templates)} templates" if plan.templates else ""
                print(
                    f"{item.source}: ok ({len(plan.objects)} objects{rendered}, "
                    f"dialect {plan.dialect})"
                )
                # what the class writes: unwritten template inputs are not files
                paths = {o.path for obj in plan.objects for o in obj.outputs if o.write}
                written[(item.namespace, item.name)] = paths | {t.path for t in plan.templates}
        found = secretsync.load(path)
        syncs.extend(found)
        for other in skipped:
            if not any(other == s.source for s in found):
                print(f"{other}: skipped, not a SecretProviderClass")
    for sync in syncs:
        failures += _validate_sync(sync, written)
    if checked == 0 and failures == 0:
        print("no SecretProviderClass found", file=sys.stderr)
        return 1
    return 1 if failures else 0


def _validate_sync(sync: secretsync.SecretSync, written: dict[tuple[str, str], set[str]]) -> int:
    """Print what ``keyferry validate`` finds about one SecretSync; 1 if it is wrong."""
    files = written.get((sync.namespace, sync.class_name))
    if files is None:  # a class or a SecretSync without a namespace matches any
        files = next(
            (
                f
                for (ns, name), f in written.items()
                if name == sync.class_name and "" in (ns, sync.namespace)
            ),
            None,
        )
    problems = secretsync.check(sync, files)
    if problems:
        print(f"{sync.source}: " + "; ".join(problems), file=sys.stderr)
        return 1
    if files is None:
        print(
            f"{sync.source}: ok; its SecretProviderClass {sync.class_name} is not among the "
            "files, so its sourcePaths were not checked"
        )
    else:
        print(f"{sync.source}: ok ({len(sync.data)} keys from {sync.class_name})")
    return 0


def _pick(path: str, name: str | None) -> manifest.SecretProviderClass:
    try:
        found = manifest.select(path, name)
    except KeyferryError as exc:
        raise SystemExit(exc.message) from None
    except OSError as exc:
        raise SystemExit(f"{path}: cannot read: {exc.strerror}") from None
    if not found:
        raise SystemExit(f"{path}: no SecretProviderClass" + (f" named {name!r}" if name else ""))
    if len(found) > 1:
        names = ", ".join(s.name for s in found)
        raise SystemExit(f"{path}: several SecretProviderClasses ({names}); choose one with --name")
    return found[0]


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {v!r}")
        out[key] = val
    return out


def build_request(args: argparse.Namespace, spc: manifest.SecretProviderClass) -> pb.MountRequest:
    if getattr(args, "sync_controller", False):  # `keyferry demo` has no such flag
        return _sync_controller_request(args, spc)
    namespace, _, pod_name = (args.pod or "default/keyferry-cli").partition("/")
    pod = Pod(
        namespace=namespace,
        name=pod_name or "keyferry-cli",
        uid=args.pod_uid or str(uuid.uuid4()),
        service_account=args.service_account,
    )
    tokens = {aud: Path(f).read_text().strip() for aud, f in _pairs(args.token, "--token").items()}
    attrs = manifest.driver_attributes(
        spc,
        pod,
        volume_attributes=_pairs(args.volume_attribute, "--volume-attribute"),
        tokens=tokens,
    )
    secrets = {k: Path(f).read_text() for k, f in _pairs(args.secret, "--secret").items()}
    import json

    return pb.MountRequest(
        attributes=manifest.encode_attributes(attrs),
        secrets=json.dumps(secrets) if secrets else "null",
        target_path=f"/var/lib/kubelet/pods/{pod.uid}/volumes/kubernetes.io~csi/secrets/mount",
        permission="420",
    )


def _sync_controller_request(
    args: argparse.Namespace, spc: manifest.SecretProviderClass
) -> pb.MountRequest:
    """The request the secrets-store-sync-controller sends for a SecretSync in the pod's
    namespace naming --service-account; --pod's name and --pod-uid stand for the
    controller's own pod (default: none)."""
    if args.secret or args.volume_attribute:
        raise SystemExit(
            "--sync-controller: the controller sends no nodePublishSecretRef (--secret) and no "
            "volume attributes (--volume-attribute)"
        )
    namespace, _, controller = (args.pod or spc.namespace or "default").partition("/")
    tokens = {aud: Path(f).read_text().strip() for aud, f in _pairs(args.token, "--token").items()}
    attrs = manifest.sync_controller_attributes(
        spc,
        namespace,
        args.service_account,
        controller_pod=(controller, args.pod_uid),
        tokens=tokens,
    )
    return pb.MountRequest(
        attributes=manifest.encode_attributes(attrs),
        secrets="{}",
        target_path=sync_controller.TARGET_PATH,
        permission="420",
    )


def call_mount(
    socket_path: Path, request: pb.MountRequest, timeout: float = 120
) -> pb.MountResponse:
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        response: pb.MountResponse = stub.Mount(request, timeout=timeout)
        return response


def check_response(response: pb.MountResponse) -> list[OutputFile]:
    """The driver's checks on a response (docs/protocol.md §3)."""
    if response.error.code:
        raise SystemExit(f"mount request failed with provider error code {response.error.code}")
    if not response.object_version:
        raise SystemExit("missing object versions")
    out = []
    for f in response.files:
        problem = path_problem(f.path)
        if problem:
            raise SystemExit(f"driver would reject file {f.path!r}: {problem}")
        if not 0 <= f.mode <= 0o777:
            raise SystemExit(f"driver would mask mode {oct(f.mode)} of {f.path!r}")
        out.append(OutputFile(path=f.path, mode=f.mode, contents=f.contents))
    return out


def _show(response: pb.MountResponse, files: list[OutputFile], contents: bool) -> None:
    print("files:")
    for f in files:
        print(f"  {f.path}  mode {f.mode:04o}  {len(f.contents)} bytes")
        if contents:
            text = f.contents.decode("utf-8", "replace")
            for line in text.splitlines() or [""]:
                print(f"    | {line}")
    print("object versions:")
    for v in response.object_version:
        print(f"  {v.id} = {v.version}")


def cmd_mount(args: argparse.Namespace) -> int:
    from .writer import write_atomic

    spc = _pick(args.file, args.name)
    setup_logging(args.log_level or "warning")
    dialect = manifest.dialect_for(spc.provider, spc.source) if not args.socket else ""
    request = build_request(args, spc)
    try:
        if args.socket:
            response = call_mount(Path(args.socket), request)
        else:
            from .embedded import EmbeddedProvider

            with tempfile.TemporaryDirectory(prefix="keyferry-") as tmp:
                cfg = _load_config(
                    args, socket_dir=tmp, providers={spc.provider: dialect}, http_address=""
                )
                with EmbeddedProvider(cfg) as emb:
                    response = call_mount(emb.socket(spc.provider), request)
    except grpc.RpcError as exc:
        print(f"Mount failed: code = {exc.code().name} desc = {exc.details()}", file=sys.stderr)
        return 1
    files = check_response(response)
    if args.print or not args.out:
        _show(response, files, contents=False)
    if args.out:
        payload = write_atomic(Path(args.out), files)
        print(f"wrote {len(files)} files to {args.out} (payload {payload.name})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .embedded import EmbeddedProvider
    from .writer import write_atomic

    spc_path = DEMO_DIR / "secretproviderclass.yaml"
    if not spc_path.exists():
        raise SystemExit(f"demo files not found at {DEMO_DIR}; run the demo from a source checkout")
    spc = _pick(str(spc_path), None)
    setup_logging("error")
    with tempfile.TemporaryDirectory(prefix="keyferry-demo-") as tmp:
        cfg = replace(
            config.Config(),
            socket_dir=Path(tmp) / "sockets",
            providers={"keyferry": "native"},
            http_address="",
            local_root=DEMO_DIR / "secrets",
        )
        print(f"keyferry {__version__} demo")
        print(f"  server: {cfg.socket_dir}/keyferry.sock (local backend root {cfg.local_root})")
        print(f"  class:  {spc_path.relative_to(REPO)} ({spc.name})")
        args.pod, args.pod_uid, args.service_account = "demo/web-0", "", "web"
        args.token, args.volume_attribute, args.secret = [], [], []
        request = build_request(args, spc)
        with EmbeddedProvider(cfg) as emb:
            response = call_mount(emb.socket("keyferry"), request)
        files = check_response(response)
        out = Path(tmp) / "volume"
        write_atomic(out, files)
        print(f"  mounted into {out} with the driver's layout:")
        for entry in sorted(out.rglob("*")):
            rel = entry.relative_to(out)
            if entry.is_symlink():
                print(f"    {rel} -> {entry.readlink()}")
            elif entry.is_dir():
                print(f"    {rel}/")
            else:
                print(f"    {rel}  ({entry.stat().st_mode & 0o777:04o})")
        print()
        _show(response, files, contents=True)
        print("\nserver stopped, sockets removed; done.")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import command

    return command(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keyferry", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the provider on its Unix sockets")
    _config_flags(s)
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("mount", help="mount a SecretProviderClass as the driver would")
    m.add_argument("-f", "--file", required=True, help="SecretProviderClass manifest")
    m.add_argument("--name", help="which SecretProviderClass in the file")
    m.add_argument("--pod", help="NAMESPACE/NAME of the pod (default default/keyferry-cli)")
    m.add_argument("--pod-uid", default="", help="pod UID (default: random)")
    m.add_argument("--service-account", default="default", help="pod service account")
    m.add_argument("--token", action="append", default=[], metavar="AUDIENCE=FILE")
    m.add_argument("--volume-attribute", action="append", default=[], metavar="KEY=VALUE")
    m.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="KEY=FILE",
        help="nodePublishSecretRef data",
    )
    m.add_argument(
        "--sync-controller",
        action="store_true",
        help="send the request the secrets-store-sync-controller sends for a SecretSync in "
        "the --pod namespace naming --service-account (docs/sync-controller.md)",
    )
    m.add_argument("--socket", help="a running provider's socket; default: an in-process one")
    m.add_argument("--out", help="write the files here with the driver's atomic layout")
    m.add_argument("--print", action="store_true", help="show paths, modes, sizes and versions")
    _config_flags(m)
    m.set_defaults(func=cmd_mount)

    v = sub.add_parser("validate", help="check SecretProviderClass manifests offline")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_validate)

    doc = sub.add_parser("doctor", help="check what a Mount needs in a cluster, fetching nothing")
    what = doc.add_mutually_exclusive_group(required=True)
    what.add_argument("--pod", metavar="NS/NAME", help="a pod with secrets-store volumes")
    what.add_argument("--class", dest="class_", metavar="NS/NAME", help="a SecretProviderClass")
    what.add_argument("-f", "--file", help="SecretProviderClass manifest(s) in a file")
    doc.add_argument("--name", help="with -f: which SecretProviderClass in the file")
    doc.add_argument(
        "--namespace", help="with -f: the namespace of the pods (default: the class's)"
    )
    doc.add_argument("--service-account", default="default", help="with -f/--class: the pods' one")
    doc.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    doc.add_argument("--context", help="kubeconfig context (default: the current one)")
    doc.add_argument("--provider-namespace", default="keyferry", help="keyferry's namespace")
    doc.add_argument("--daemonset", default="keyferry", help="keyferry's DaemonSet name")
    doc.set_defaults(func=cmd_doctor)

    d = sub.add_parser("demo", help="mount examples/demo through a real server and show it")
    d.set_defaults(func=cmd_demo)

    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(func=cmd_version)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return rc
