"""Fakes of the services keyferry talks to, and a harness that runs keyferry itself, for the
tests (``tests/``) and the benchmarks (``bench/``).

Each fake listens on an ephemeral 127.0.0.1 port (``serving``) and is as strict as the
service it stands for, so the real SDK clients can be pointed at it: the Kubernetes API
(``kube``, ``kube_extra``), the cluster's ServiceAccount token issuer (``oidc``), AWS
(``aws_faults``: moto behind a strict proxy; ``aws_agent``: the EKS Pod Identity agent;
``aws_stack``: the pipeline with the aws backend, without gRPC), Google Cloud (``gcp``),
Entra ID and Key Vault (``azure``, ``azure_certs``). Every one of them can be made to
throttle, fail, reset mid-response, answer late or go down (``faults``; ``tcp_faults`` resets
gRPC connections); ``gate``, a proxy that holds chosen requests until the test lets them
through. ``harness`` starts a keyferry server on Unix sockets and builds driver-shaped
requests.

A development package: it sits next to ``provider/`` but is not part of the wheel
(pyproject.toml packages ``provider*`` only).
"""
