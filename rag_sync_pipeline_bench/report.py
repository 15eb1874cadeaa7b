"""The benchmark's one table (figure, value, target, verdict) and the same as JSON, for comparing runs."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    met: bool | None = None


def render_table(rows: list[Row]) -> str:
    widths = [max(len(getattr(r, name)) for r in rows) for name in ("figure", "value", "target")]
    widths = [max(w, len(h)) for w, h in zip(widths, ("figure", "value", "target"), strict=True)]
    lines = [f"{'figure':<{widths[0]}}  {'value':<{widths[1]}}  {'target':<{widths[2]}}  verdict",
             "-" * (sum(widths) + 15)]
    for row in rows:
        verdict = "" if row.met is None else ("met" if row.met else "MISSED")
        lines.append(f"{row.figure:<{widths[0]}}  {row.value:<{widths[1]}}  {row.target:<{widths[2]}}  {verdict}")
    return "\n".join(lines)


def write_json(directory: Path, rows: list[Row], figures: dict, settings: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = directory / f"bench-{stamp}.json"
    document = {"created_utc": stamp, "machine": {"python": platform.python_version(), "cpus": _cpus()},
                "settings": settings, "table": [asdict(r) for r in rows], "figures": figures}
    path.write_text(json.dumps(document, indent=2, default=str))
    (directory / "latest.json").write_text(path.read_text())
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
