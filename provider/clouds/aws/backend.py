"""The ``aws`` backend: Secrets Manager and SSM Parameter Store, read as the pod.

One :meth:`AwsBackend.fetch` per Mount:

1. identity checks that need no network (the token for the right audience);
2. regions: per object, else server configuration / ``AWS_REGION``, else the
   node's ``topology.kubernetes.io/region`` label (Kubernetes API, cached);
3. the pod's credentials (IRSA or EKS Pod Identity, see :mod:`.identity`);
4. values, batched: ``BatchGetSecretValue`` (20 a call) for AWSCURRENT secrets,
   falling back to ``GetSecretValue`` when the identity may not batch;
   ``GetParameters`` (10 a call, decrypted) for SSM; all groups concurrently;
5. failover: objects whose primary region failed with throttling, a 5xx or a
   network error are read again in their failover region. Never after a 4xx.

Values are cached per (principal, ref, region) for the server's
``cache_ttl_seconds`` (``pinned_cache_seconds`` for immutable versions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...backend import FetchResult, Services
from ...cache import TTLCache
from ...errors import (
    Code,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    KeyferryError,
    Unavailable,
)
from ...model import Deadline, Fetched, Mount
from ...observe import get_logger
from . import settings as settings_mod
from .errors import THROTTLING_CODES, Failure, classify, from_code
from .credentials import ROLE_ANNOTATION, Identity, IdentityPool, Principal, role_session_name
from .ref import (
    DEFAULT_STAGE,
    IRSA_AUDIENCE,
    POD_IDENTITY_AUDIENCE,
    AwsRef,
    AwsTarget,
    is_arn,
    parse_arn,
)
from .settings import AwsSettings

__all__ = ["AwsBackend", "create"]

NAME = "aws"
SM_BATCH = 20
SSM_BATCH = 10
REGION_LABEL = "topology.kubernetes.io/region"
_log = get_logger("aws")
T = TypeVar("T")


def create(settings: Mapping[str, Any], services: Services) -> AwsBackend:
    """The registry's factory; raises ConfigError on bad ``backends.aws`` settings."""
    return AwsBackend(settings_mod.parse(settings), services)


@dataclass
class _Job:
    """One ref to read in one region."""

    index: int
    ref: AwsRef
    target: AwsTarget
    region: str


@dataclass
class _Outcome:
    results: dict[int, Fetched] = field(default_factory=dict)
    failures: dict[int, Failure] = field(default_factory=dict)


class AwsBackend:
    name = NAME

    def __init__(self, settings: AwsSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.pool = IdentityPool(settings)
        self._regions: TTLCache[str] = TTLCache(settings.region_cache_seconds)
        self._inflight: TTLCache[_Outcome] = TTLCache(0)  # coalescing only, nothing kept
        self._batch_denied: TTLCache[bool] = TTLCache(settings.batch_denied_seconds)
        self._semaphore: asyncio.Semaphore | None = None
        self.calls: dict[str, int] = {}
        """API calls made, by operation (for tests and the benchmark)."""

    async def close(self) -> None:
        self._regions.clear()

    # ------------------------------------------------------------------ entry

    async def fetch(
        self, mount: Mount, refs: Sequence[Hashable], deadline: Deadline
    ) -> list[FetchResult]:
        aws_refs: list[AwsRef] = []
        for ref in refs:
            if not isinstance(ref, AwsRef):
                raise Internal(f"aws backend got a {type(ref).__name__} locator")
            aws_refs.append(ref)
        results: list[FetchResult | None] = [None] * len(aws_refs)

        # 1. tokens (no I/O) per identity mode
        modes: dict[tuple[str, str], list[int]] = {}
        for i, ref in enumerate(aws_refs):
            modes.setdefault((ref.auth, ref.address_type), []).append(i)
        token_errors: dict[tuple[str, str], KeyferryError] = {}
        for mode in modes:
            err = self._check_token(mount, mode[0])
            if err is not None:
                token_errors[mode] = err

        # 2. regions and region checks (may read the node label)
        primary: dict[int, str] = {}
        default_region: str | None = None
        region_error: KeyferryError | None = None
        for i, ref in enumerate(aws_refs):
            region = ref.region
            if not region:
                if default_region is None and region_error is None:
                    try:
                        default_region = await self._default_region(mount, deadline)
                    except KeyferryError as exc:
                        region_error = exc
                if region_error is not None:
                    results[i] = region_error
                    continue
                assert default_region is not None
                region = default_region
            problem = _region_problem(ref, region)
            if problem:
                results[i] = InvalidArgument(problem)
                continue
            primary[i] = region

        # 3. identities, then 4./5. values per identity mode
        tasks = []
        task_indices: list[list[int]] = []
        for mode, indices in modes.items():
            todo = [i for i in indices if results[i] is None]
            if not todo:
                continue
            if mode in token_errors:
                for i in todo:
                    results[i] = token_errors[mode]
                continue
            tasks.append(self._fetch_mode(mount, mode, todo, aws_refs, primary, deadline))
            task_indices.append(todo)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for todo, out in zip(task_indices, outcomes, strict=True):
            if isinstance(out, BaseException):
                if not isinstance(out, Exception):
                    raise out
                for i in todo:  # e.g. the identity failed: every object of it fails
                    results[i] = out
                continue
            for i, value in out.items():
                results[i] = value
        return [r if r is not None else Internal("no result from the aws backend") for r in results]

    async def _fetch_mode(
        self,
        mount: Mount,
        mode: tuple[str, str],
        indices: list[int],
        refs: list[AwsRef],
        primary: dict[int, str],
        deadline: Deadline,
    ) -> dict[int, FetchResult]:
        first_region = primary[indices[0]]
        identity = await self._identity(mount, mode[0], mode[1], first_region, deadline)
        principal = identity.principal
        out: dict[int, FetchResult] = {}
        jobs: list[_Job] = []
        for i in indices:
            key = (NAME, principal, refs[i], primary[i])
            cached = self.services.values.get(key)
            if cached is not None:
                self.services.metrics.cache_events.labels("aws-values", "hit").inc()
                out[i] = cached
            else:
                jobs.append(_Job(i, refs[i], refs[i].target, primary[i]))
        # Identical concurrent mounts (a rollout: many pods of one service account, one
        # class) share one set of API calls instead of each missing the cache.
        batch_key = (principal, tuple((j.index, j.ref, j.region) for j in jobs))
        shared = await self._inflight.get_or_load(
            batch_key, lambda: self._run_jobs(identity, jobs, deadline)
        )
        first = _Outcome(dict(shared.results), dict(shared.failures))  # ours to amend
        retry: list[_Job] = []
        for job in jobs:
            failure = first.failures.get(job.index)
            if failure is None:
                continue
            if failure.transient and job.ref.failover_region:
                retry.append(
                    _Job(job.index, job.ref, job.ref.failover_target, job.ref.failover_region)
                )
                _log.warning(
                    "aws primary region failed, trying the failover region",
                    extra={
                        "region": job.region,
                        "failover_region": job.ref.failover_region,
                        "aws_error": failure.code,
                    },
                )
            else:
                out[job.index] = failure.error
        second = await self._run_jobs(identity, retry, deadline) if retry else _Outcome()
        for job in retry:
            if job.index in second.results:
                self.services.metrics.backend_requests.labels(NAME, "failover", "ok").inc()
                first.results[job.index] = second.results[job.index]
            else:
                self.services.metrics.backend_requests.labels(NAME, "failover", "error").inc()
                before = first.failures[job.index]
                after = second.failures[job.index]
                message = (
                    f"primary region {refs[job.index].region or primary[job.index]}: "
                    f"{before.error.message}; failover region {job.region}: {after.error.message}"
                )
                out[job.index] = type(after.error)(message, code=after.error.code)
        for job in jobs:
            fetched = first.results.get(job.index)
            if fetched is None:
                continue
            out[job.index] = fetched
            ttl = (
                self.settings.pinned_cache_seconds
                if job.ref.target.pinned
                else self.services.config.cache_ttl_seconds
            )
            self.services.values.put((NAME, principal, job.ref, job.region), fetched, ttl=ttl)
        return out

    # ------------------------------------------------------------ identity

    def _check_token(self, mount: Mount, auth: str) -> KeyferryError | None:
        audience = POD_IDENTITY_AUDIENCE if auth == "pod-identity" else IRSA_AUDIENCE
        token = mount.tokens.get(audience)
        if token is not None and token.token:
            return None
        if self.settings.allow_node_identity:
            return None
        other = IRSA_AUDIENCE if audience == POD_IDENTITY_AUDIENCE else POD_IDENTITY_AUDIENCE
        mode = "EKS Pod Identity" if auth == "pod-identity" else "IRSA"
        if token is not None:
            problem = f"the service-account token for audience '{audience}' is empty"
        elif not mount.tokens:
            problem = "the driver passed no service-account tokens"
        else:
            found = ", ".join(sorted(f"'{a}'" for a in mount.tokens))
            problem = f"no service-account token for audience '{audience}' (got {found})"
        hint = ""
        if other in mount.tokens:
            switch = 'usePodIdentity: "true"' if auth == "irsa" else 'usePodIdentity: "false"'
            hint = f"; or, if this pod should use the other method, set {switch}"
        return FailedPrecondition(
            f"{mode} needs the pod's token: {problem}. Add '- audience: {audience}' to "
            f"spec.tokenRequests of the CSIDriver secrets-store.csi.k8s.io{hint}"
        )

    async def _identity(
        self, mount: Mount, auth: str, address_type: str, region: str, deadline: Deadline
    ) -> Identity:
        audience = POD_IDENTITY_AUDIENCE if auth == "pod-identity" else IRSA_AUDIENCE
        token = mount.tokens.get(audience)
        ns, sa = mount.pod.namespace, mount.pod.service_account
        if token is None or not token.token:
            _log.warning("no pod token; using the node's identity (allow_node_identity)")
            return self.pool.node()
        if not ns or not sa:
            raise FailedPrecondition(
                "the driver did not pass the pod's namespace and service account; set "
                "podInfoOnMount: true on the CSIDriver secrets-store.csi.k8s.io"
            )
        session_name = role_session_name(mount)
        if auth == "irsa":
            role_arn = await self._role_arn(ns, sa, deadline)
            if role_arn is None:
                if self.settings.allow_node_identity:
                    return self.pool.node()
                raise FailedPrecondition(
                    f"IRSA: service account {ns}/{sa} has no '{ROLE_ANNOTATION}' annotation; "
                    f"annotate it with the IAM role to assume: kubectl annotate serviceaccount "
                    f"-n {ns} {sa} {ROLE_ANNOTATION}=arn:aws:iam::<account>:role/<role> "
                    '(or set usePodIdentity: "true" for EKS Pod Identity)'
                )
            principal = Principal("irsa", ns, sa, role_arn)
            identity = self.pool.irsa(principal, self.settings.sts_region or region)
            identity.update(token.token, session_name)
            what = f"IRSA: AssumeRoleWithWebIdentity for {principal.describe()}"
            hint = (
                "the role's trust policy must allow sts:AssumeRoleWithWebIdentity for "
                f"system:serviceaccount:{ns}:{sa} from the cluster's OIDC provider"
            )
            token_hint = (
                f"the pod's service-account token for audience '{IRSA_AUDIENCE}' has expired; "
                "kubelet requests it per mount as spec.tokenRequests of the CSIDriver "
                "secrets-store.csi.k8s.io says (expirationSeconds): check those and the node's "
                "clock"
            )
            oidc_hint = (
                "STS cannot verify the pod's token: the AWS account needs an IAM OIDC provider "
                f"for the cluster's issuer URL with audience (client ID) '{IRSA_AUDIENCE}', and "
                f"the token must be the one the CSIDriver requests for '{IRSA_AUDIENCE}'"
            )
            await self._call(
                "sts",
                "AssumeRoleWithWebIdentity",
                identity.credentials.get_frozen_credentials,
                deadline,
                what=what,
                hint=hint,
                hints={
                    "ExpiredTokenException": token_hint,
                    "ExpiredToken": token_hint,
                    "InvalidIdentityToken": oidc_hint,
                    "IDPRejectedClaim": oidc_hint,
                },
                count=False,
            )
            return identity
        principal = Principal("pod-identity", ns, sa)
        key, identity = self.pool.pod_identity(principal, address_type)  # type: ignore[arg-type]
        identity.update(token.token, session_name)
        what = f"EKS Pod Identity: credentials for service account {ns}/{sa}"
        try:
            if identity.credentials is None:
                loaded = await self._call(
                    "pod-identity",
                    "GetCredentials",
                    self.pool.load_pod_identity,
                    deadline,
                    key,
                    identity,
                    what=what,
                    count=False,
                )
                identity = loaded
            else:
                await self._call(
                    "pod-identity",
                    "GetCredentials",
                    identity.credentials.get_frozen_credentials,
                    deadline,
                    what=what,
                    count=False,
                )
        except KeyferryError as exc:
            raise self._agent_error(identity, exc, ns, sa) from None
        return identity

    def _agent_error(
        self, identity: Identity, exc: KeyferryError, ns: str, sa: str
    ) -> KeyferryError:
        fetcher = identity.fetcher
        status = getattr(fetcher, "last_status", 0)
        tried = ", ".join(getattr(fetcher, "tried", []) or [])
        if status in (400, 401, 403):
            from ...errors import PermissionDenied

            return PermissionDenied(
                f"EKS Pod Identity: the agent refused the pod's token for {ns}/{sa} "
                f"(HTTP {status}); "
                "check that a Pod Identity association exists for this service account and "
                "that the CSIDriver tokenRequests include audience 'pods.eks.amazonaws.com'"
            )
        if status == 404:
            from ...errors import NotFound

            return NotFound(
                f"EKS Pod Identity: no Pod Identity association for service account {ns}/{sa} "
                "(agent answered 404); create one with aws eks create-pod-identity-association"
            )
        if status:
            return Unavailable(f"EKS Pod Identity: the agent answered HTTP {status}; retry later")
        if exc.code is Code.UNAVAILABLE:
            return Unavailable(
                f"EKS Pod Identity: cannot reach the Pod Identity agent for {ns}/{sa} "
                f"(tried {tried or 'nothing'}); is the eks-pod-identity-agent add-on running "
                "on this node?"
            )
        return exc

    async def _role_arn(self, ns: str, sa: str, deadline: Deadline) -> str | None:
        try:
            account = await asyncio.wait_for(
                self.services.kube.service_account(ns, sa), timeout=max(0.05, deadline.remaining())
            )
        except TimeoutError:
            raise DeadlineExceeded(
                f"IRSA: reading service account {ns}/{sa} from the Kubernetes API timed out"
            ) from None
        except KeyferryError as exc:
            raise type(exc)(
                f"IRSA: cannot read the role annotation of service account {ns}/{sa}: "
                + exc.message,
                code=exc.code,
            ) from None
        role = str(account.get("annotations", {}).get(ROLE_ANNOTATION, "")).strip()
        if not role:
            return None
        arn = parse_arn(role)
        if arn is None or arn.service != "iam" or not arn.resource.startswith("role/"):
            raise FailedPrecondition(
                f"IRSA: the '{ROLE_ANNOTATION}' annotation of service account {ns}/{sa} is not "
                "an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
            )
        return role

    # --------------------------------------------------------------- regions

    async def _default_region(self, mount: Mount, deadline: Deadline) -> str:
        if self.settings.region:
            return self.settings.region
        ns, pod = mount.pod.namespace, mount.pod.name
        fix = (
            "set 'region' in the SecretProviderClass, or backends.aws.region (or AWS_REGION) "
            f"in keyferry's configuration, or label the node with {REGION_LABEL}"
        )
        if not ns or not pod:
            raise FailedPrecondition(
                f"no AWS region: the driver did not pass the pod's name to look up its node; {fix}"
            )

        async def load() -> str:
            try:
                info = await self.services.kube.pod(ns, pod)
                node = str(info.get("node_name", ""))
                if not node:
                    raise FailedPrecondition(f"pod {ns}/{pod} is not scheduled on a node yet")
                labels = (await self.services.kube.node(node)).get("labels", {})
            except KeyferryError as exc:
                raise type(exc)(
                    f"no AWS region: looking up the node of pod {ns}/{pod} failed "
                    f"({exc.message}); {fix}",
                    code=exc.code,
                ) from None
            region = str(labels.get(REGION_LABEL, "")).strip()
            if not region:
                raise FailedPrecondition(
                    f"no AWS region: node {node} has no {REGION_LABEL} label; {fix}"
                )
            from .ref import REGION_RE

            if not REGION_RE.match(region):
                raise FailedPrecondition(
                    f"node {node} label {REGION_LABEL}={region!r} is not a region"
                )
            return region

        try:
            return await asyncio.wait_for(
                self._regions.get_or_load(("pod", ns, pod), load),
                timeout=max(0.05, deadline.remaining()),
            )
        except TimeoutError:
            raise DeadlineExceeded(f"no AWS region: the node lookup timed out; {fix}") from None

    # ---------------------------------------------------------------- calls

    def _retry_hook(self, operation_prefix: str) -> Callable[..., None]:
        metrics = self.services.metrics

        def hook(
            response: Any = None, caught_exception: Any = None, operation: Any = None, **_: Any
        ) -> None:
            op = getattr(operation, "name", "") or operation_prefix
            if response is not None:
                parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else {}
                code = str((parsed or {}).get("Error", {}).get("Code", ""))
                status = (
                    getattr(response[0], "status_code", 0) if isinstance(response, tuple) else 0
                )
                if code in THROTTLING_CODES or status == 429:
                    metrics.backend_requests.labels(NAME, op, "throttled").inc()
                elif status >= 500:
                    metrics.backend_requests.labels(NAME, op, "server_error").inc()
            elif caught_exception is not None:
                metrics.backend_requests.labels(NAME, op, "network_error").inc()
            return None

        return hook

    async def _client(self, identity: Identity, service: str, region: str) -> Any:
        key = (service, region)
        client = identity.clients.get(key)
        if client is not None:
            return client
        return await self.services.run_blocking(
            self.pool.client, identity, service, region, self._retry_hook(service)
        )

    async def _call(
        self,
        service: str,
        operation: str,
        fn: Callable[..., T],
        deadline: Deadline,
        *args: Any,
        what: str = "",
        hint: str = "",
        hints: Mapping[str, str] | None = None,
        count: bool = True,
        **kwargs: Any,
    ) -> T:
        """One blocking SDK call on the shared pool, bounded by the mount deadline;
        failures come back as classified :class:`KeyferryError` (with ``hints[code]``
        instead of ``hint`` for the AWS error codes it names)."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
        remaining = deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(f"{what or operation}: the mount's time budget is spent")
        self.calls[operation] = self.calls.get(operation, 0) + 1
        try:
            async with self._semaphore:
                return await asyncio.wait_for(
                    self.services.timed(NAME, operation, fn, *args, **kwargs),
                    timeout=max(0.05, deadline.remaining()),
                )
        except KeyferryError:
            raise
        except Exception as exc:
            failure = classify(exc, what or f"{service} {operation}", hint)
            if hints and failure.code in hints:
                failure = classify(exc, what or f"{service} {operation}", hints[failure.code])
            raise failure.error from None

    async def _raw_call(
        self, operation: str, fn: Callable[..., T], deadline: Deadline, **kwargs: Any
    ) -> T:
        """Like :meth:`_call` but leaves botocore exceptions unclassified."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
        if deadline.remaining() <= 0:
            raise TimeoutError
        self.calls[operation] = self.calls.get(operation, 0) + 1
        async with self._semaphore:
            return await asyncio.wait_for(
                self.services.timed(NAME, operation, fn, **kwargs),
                timeout=max(0.05, deadline.remaining()),
            )

    # ---------------------------------------------------------------- values

    async def _run_jobs(self, identity: Identity, jobs: list[_Job], deadline: Deadline) -> _Outcome:
        groups: dict[tuple[str, str], list[_Job]] = {}
        for job in jobs:
            groups.setdefault((job.ref.service, job.region), []).append(job)
        outcome = _Outcome()
        runs: list[Awaitable[None]] = []
        for (service, region), group in groups.items():
            if service == "secretsmanager":
                runs.append(self._secrets_manager(identity, region, group, deadline, outcome))
            else:
                runs.append(self._ssm(identity, region, group, deadline, outcome))
        await asyncio.gather(*runs)
        return outcome

    def _hint(self, identity: Identity, action: str) -> str:
        return f"{identity.principal.describe()} needs {action} on it"

    # Secrets Manager ----------------------------------------------------------

    async def _secrets_manager(
        self,
        identity: Identity,
        region: str,
        jobs: list[_Job],
        deadline: Deadline,
        outcome: _Outcome,
    ) -> None:
        try:
            client = await self._client(identity, "secretsmanager", region)
        except Exception as exc:  # client creation is local; a failure is a config problem
            failure = classify(exc, f"Secrets Manager client for {region}")
            for job in jobs:
                outcome.failures[job.index] = failure
            return
        batchable = [
            j
            for j in jobs
            if not j.target.version_id and j.target.version_label in ("", DEFAULT_STAGE)
        ]
        singles = [j for j in jobs if j not in batchable]
        principal = identity.principal
        use_batch = (
            self.settings.batch_get_secret_value
            and len({j.target.name for j in batchable}) > 1
            and self._batch_denied.get((principal, region)) is None
        )
        if not use_batch:
            singles = jobs
            batchable = []
        tasks: list[Awaitable[None]] = []
        by_name: dict[str, list[_Job]] = {}
        for job in batchable:
            by_name.setdefault(job.target.name, []).append(job)
        names = list(by_name)
        fallback: list[_Job] = []
        if names:
            chunks = [names[k : k + SM_BATCH] for k in range(0, len(names), SM_BATCH)]
            chunk_results = await asyncio.gather(
                *(
                    self._sm_batch(identity, client, region, chunk, by_name, deadline, outcome)
                    for chunk in chunks
                )
            )
            for leftover in chunk_results:
                fallback.extend(leftover)
        for job in [*singles, *fallback]:
            tasks.append(self._sm_single(identity, client, region, job, deadline, outcome))
        await asyncio.gather(*tasks)

    async def _sm_batch(
        self,
        identity: Identity,
        client: Any,
        region: str,
        names: list[str],
        by_name: dict[str, list[_Job]],
        deadline: Deadline,
        outcome: _Outcome,
    ) -> list[_Job]:
        """One BatchGetSecretValue (with pages); returns the jobs to read one by one."""
        jobs = [j for n in names for j in by_name[n]]
        values: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        token = ""
        try:
            while True:
                kwargs: dict[str, Any] = {"SecretIdList": names}
                if token:
                    kwargs["NextToken"] = token
                page = await self._raw_call(
                    "BatchGetSecretValue", client.batch_get_secret_value, deadline, **kwargs
                )
                values.extend(page.get("SecretValues", []) or [])
                errors.extend(page.get("Errors", []) or [])
                token = page.get("NextToken") or ""
                if not token:
                    break
        except Exception as exc:
            failure = classify(exc, f"Secrets Manager BatchGetSecretValue in {region}")
            if failure.transient or failure.code == "Timeout":
                for job in jobs:
                    outcome.failures[job.index] = failure
                return []
            if failure.code in ("AccessDeniedException", "AccessDenied"):
                self._batch_denied.put((identity.principal, region), True)
                self.services.metrics.backend_requests.labels(
                    NAME, "BatchGetSecretValue", "denied"
                ).inc()
                _log.info(
                    "BatchGetSecretValue denied; reading secrets one by one",
                    extra={"region": region, "principal": identity.principal.describe()},
                )
            return jobs
        found: dict[str, dict[str, Any]] = {}
        for entry in values:
            for key in ("Name", "ARN"):
                if entry.get(key):
                    found[str(entry[key])] = entry
        failed = {str(e.get("SecretId", "")): e for e in errors}
        leftover: list[_Job] = []
        for name in names:
            value: dict[str, Any] | None = found.get(name)
            if value is None and is_arn(name):
                value = next((v for a, v in found.items() if a.startswith(name + "-")), None)
            for job in by_name[name]:
                if value is not None:
                    outcome.results[job.index] = _sm_fetched(value, region)
                elif name in failed:
                    err = failed[name]
                    code = str(err.get("ErrorCode", ""))
                    outcome.failures[job.index] = from_code(
                        code,
                        0,
                        str(err.get("Message", "")),
                        f"Secrets Manager {job.target.describe('secretsmanager')} in {region}",
                        self._sm_hint(identity, code),
                    )
                else:
                    leftover.append(job)
        return leftover

    def _sm_hint(self, identity: Identity, code: str) -> str:
        if code == "DecryptionFailure" or "KMS" in code:
            return self._hint(identity, "kms:Decrypt for the secret's KMS key")
        if code in ("AccessDeniedException", "AccessDenied"):
            return self._hint(identity, "secretsmanager:GetSecretValue")
        return ""

    async def _sm_single(
        self,
        identity: Identity,
        client: Any,
        region: str,
        job: _Job,
        deadline: Deadline,
        outcome: _Outcome,
    ) -> None:
        kwargs: dict[str, Any] = {"SecretId": job.target.name}
        if job.target.version_id:
            kwargs["VersionId"] = job.target.version_id
        if job.target.version_label:
            kwargs["VersionStage"] = job.target.version_label
        what = f"Secrets Manager {job.target.describe('secretsmanager')} in {region}"
        try:
            value = await self._raw_call(
                "GetSecretValue", client.get_secret_value, deadline, **kwargs
            )
        except Exception as exc:
            failure = classify(exc, what)
            if not failure.transient and failure.code:
                failure = classify(exc, what, self._sm_hint(identity, failure.code))
            outcome.failures[job.index] = failure
            return
        outcome.results[job.index] = _sm_fetched(value, region)

    # SSM ------------------------------------------------------------------------

    async def _ssm(
        self,
        identity: Identity,
        region: str,
        jobs: list[_Job],
        deadline: Deadline,
        outcome: _Outcome,
    ) -> None:
        try:
            client = await self._client(identity, "ssm", region)
        except Exception as exc:
            failure = classify(exc, f"SSM client for {region}")
            for job in jobs:
                outcome.failures[job.index] = failure
            return
        # One request string per selector; never two selectors of one name in a call,
        # so results (which may lack 'Selector') map back unambiguously.
        by_selector: dict[str, list[_Job]] = {}
        for job in jobs:
            by_selector.setdefault(job.target.ssm_selector(), []).append(job)
        # Names with several selectors first, each selector in a different call; then
        # first-fit: the fewest calls when one parameter is read at several versions.
        by_name: dict[str, list[str]] = {}
        for selector, group in by_selector.items():
            by_name.setdefault(_ssm_key(group[0].target.name), []).append(selector)
        batches: list[dict[str, str]] = []  # normalized name -> selector
        for name, selectors in sorted(by_name.items(), key=lambda kv: -len(kv[1])):
            for selector in selectors:
                for batch in batches:
                    if len(batch) < SSM_BATCH and name not in batch:
                        batch[name] = selector
                        break
                else:
                    batches.append({name: selector})
        await asyncio.gather(
            *(
                self._ssm_batch(identity, client, region, b, by_selector, deadline, outcome)
                for b in batches
            )
        )

    async def _ssm_batch(
        self,
        identity: Identity,
        client: Any,
        region: str,
        batch: dict[str, str],
        by_selector: dict[str, list[_Job]],
        deadline: Deadline,
        outcome: _Outcome,
    ) -> None:
        selectors = list(batch.values())
        try:
            page = await self._raw_call(
                "GetParameters",
                client.get_parameters,
                deadline,
                Names=selectors,
                WithDecryption=True,
            )
        except Exception as exc:
            failure = classify(exc, f"SSM GetParameters in {region} ({len(selectors)} parameters)")
            if not failure.transient and failure.code in ("AccessDeniedException", "AccessDenied"):
                failure = classify(
                    exc,
                    f"SSM GetParameters in {region} ({len(selectors)} parameters)",
                    self._hint(identity, "ssm:GetParameters (and kms:Decrypt for SecureString)"),
                )
            for selector in selectors:
                for job in by_selector[selector]:
                    outcome.failures[job.index] = failure
            return
        for param in page.get("Parameters", []) or []:
            found = batch.get(_ssm_key(str(param.get("Name", ""))))
            if found is None and param.get("ARN"):
                found = batch.get(_ssm_key(str(param["ARN"])))
            if found is None:
                continue
            selector = found
            fetched = Fetched(
                content=str(param.get("Value", "")).encode("utf-8"),
                version=str(param.get("Version", "")),
                content_type=str(param.get("Type", "")),
                served_by=region,
            )
            for job in by_selector[selector]:
                outcome.results[job.index] = fetched
        invalid = set(page.get("InvalidParameters", []) or [])
        for selector in selectors:
            for job in by_selector[selector]:
                if job.index in outcome.results:
                    continue
                what = f"SSM {job.target.describe('ssm')} in {region}"
                if selector in invalid:
                    outcome.failures[job.index] = from_code(
                        "ParameterNotFound",
                        0,
                        "",
                        what,
                        "check the name, the version or label, and the region",
                    )
                else:
                    outcome.failures[job.index] = Failure(
                        Internal(f"{what}: GetParameters returned no result for it"), False
                    )


def _ssm_key(name: str) -> str:
    """A parameter name or ARN reduced to the bare name, for matching results."""
    if is_arn(name):
        arn = parse_arn(name)
        if arn is not None and arn.resource.startswith("parameter"):
            name = arn.resource[len("parameter") :]
    return name.lstrip("/")


def _sm_fetched(value: Mapping[str, Any], region: str) -> Fetched:
    if value.get("SecretString") is not None:
        content = str(value["SecretString"]).encode("utf-8")
        kind = "text"
    else:
        content = bytes(value.get("SecretBinary") or b"")
        kind = "binary"
    return Fetched(
        content=content,
        version=str(value.get("VersionId", "")),
        content_type=kind,
        served_by=region,
    )


def _region_problem(ref: AwsRef, region: str) -> str:
    names = [(ref.target.name, region)]
    if ref.failover_region:
        if ref.failover_region == region:
            return (
                f"failoverRegion {ref.failover_region!r} is also the primary region; "
                "a failover region must differ"
            )
        if ref.failover is not None:
            names.append((ref.failover.name, ref.failover_region))
    for name, where in names:
        if is_arn(name):
            arn = parse_arn(name)
            if arn is not None and arn.region != where:
                return (
                    f"the ARN's region {arn.region!r} does not match the region {where!r} it is "
                    "read from; set 'region' to the ARN's region or use an ARN of that region"
                )
    return ""
