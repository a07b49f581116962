"""The one table ``make bench`` prints: a row per measurement, keyferry beside its
reference from the same run, their ratio and the target it is held to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Row:
    label: str
    keyferry: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    """None: no target."""


@dataclass
class Section:
    title: str
    rows: list[Row]
    note: str = ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def render(sections: Sequence[Section]) -> str:
    header = ("", "keyferry", "reference", "ratio", "target", "")
    widths = [58, 12, 20, 8, 10, 8]
    lines = [
        "".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        ).rstrip()
    ]
    for section in sections:
        lines.append(section.title)
        for row in section.rows:
            verdict = "" if row.met is None else ("met" if row.met else "MISSED")
            cells = (f"  {row.label}", row.keyferry, row.reference, row.ratio, row.target, verdict)
            lines.append(
                "".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(cells, widths, strict=True))
                ).rstrip()
            )
        if section.note:
            lines.append(f"  ({section.note})")
    return "\n".join(lines)
