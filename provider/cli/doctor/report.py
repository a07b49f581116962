"""The doctor's report: each check is PASS, FAIL (with the fix) or NOTE, under the
section (the DaemonSet, the CSIDriver, a pod, a class) it is about."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["PASS", "FAIL", "NOTE"]


@dataclass(frozen=True)
class Check:
    status: Status
    text: str
    fix: str = ""


@dataclass
class Report:
    checks: list[tuple[str, Check]] = field(default_factory=list)

    def add(self, section: str, status: Status, text: str, fix: str = "") -> None:
        self.checks.append((section, Check(status, text, fix)))

    @property
    def failed(self) -> int:
        return sum(1 for _, c in self.checks if c.status == "FAIL")

    def lines(self) -> Iterator[str]:
        section = None
        for name, check in self.checks:
            if name != section:
                section = name
                yield ""
                yield name
            yield f"  {check.status:<4}  {check.text}"
            if check.fix:
                yield f"        fix: {check.fix}"
        yield ""
        yield (
            f"{self.failed} check(s) failed"
            if self.failed
            else "all checks passed: a Mount has what it needs on the Kubernetes side"
        )
