"""Parse the pack's per-run "DiT Accel:" summary lines out of a server log.

The summary is written by accel_core/stats.py (RunStats.summary), e.g.
``DiT Accel: flux taylorseer-o2-i5-w3-f1-final_hidden: 50 steps, 50 model calls: 12 computed,
38 forecast; 4.17x fewer model evaluations; cache 1.2 MiB peak (...); 0.31 s``.
The start-of-run line ("... N steps, K planned full steps") is not a summary.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

PREFIX = "DiT Accel:"
_SUMMARY = re.compile(
    r"DiT Accel: (?P<family>\S+) (?P<tag>\S+): (?P<steps>\d+) steps, (?P<calls>\d+) model calls: "
    r"(?P<computed>\d+) computed, (?P<forecast>\d+) forecast"
    r"(?:, (?P<fallbacks>\d+) forecast fallbacks)?"
    r"; (?P<speedup>[0-9.]+)x fewer model evaluations"
    r"(?:.*?; (?P<wall>[0-9.]+) s)?"
)


@dataclass(frozen=True)
class RunSummary:
    family: str
    tag: str
    steps: int
    calls: int
    computed: int
    forecast: int
    fallbacks: int
    evaluation_speedup: float
    wall_seconds: float | None
    interrupted: bool
    line: str

    def as_dict(self) -> dict:
        return asdict(self)


def parse_summaries(log_text: str) -> list[RunSummary]:
    """Every run summary in ``log_text``, in order."""
    out = []
    for line in log_text.splitlines():
        start = line.find(PREFIX)
        if start < 0:
            continue
        line = line[start:].strip()
        m = _SUMMARY.match(line)
        if not m:
            continue
        g = m.groupdict()
        out.append(RunSummary(
            family=g["family"], tag=g["tag"], steps=int(g["steps"]), calls=int(g["calls"]),
            computed=int(g["computed"]), forecast=int(g["forecast"]), fallbacks=int(g["fallbacks"] or 0),
            evaluation_speedup=float(g["speedup"]), wall_seconds=float(g["wall"]) if g["wall"] else None,
            interrupted="(interrupted)" in line, line=line,
        ))
    return out


def dit_accel_lines(log_text: str) -> list[str]:
    """Every line the pack logged with the "DiT Accel:" prefix (start lines, summaries, warnings)."""
    return [line[line.find(PREFIX):].strip() for line in log_text.splitlines() if PREFIX in line]
