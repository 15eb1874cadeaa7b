"""What one stage did for one partition, in the numbers the Dagster UI plots."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MAX_REPORTED_FAILURES = 20


@dataclass
class StageReport:
    stage: str
    documents_added: int = 0
    documents_updated: int = 0
    documents_deleted: int = 0
    documents_unchanged: int = 0
    documents_failed: int = 0
    documents_skipped: int = 0
    chunks_written: int = 0
    chunks_embedded: int = 0
    chunks_embedded_ahead: int = 0
    """Of `chunks_embedded`, those the look-ahead encoded while the earlier stages ran (see sync.lookahead)."""
    chunks_reused: int = 0
    api_calls: int = 0
    documents_total: int = 0
    rows_total: int = 0
    duration_s: float = 0.0
    cpu_s: float = 0.0
    """CPU seconds of the whole process (every thread) while the stage ran: against `duration_s`, how much of
    the stage was work here and how much was waiting (on the source, on the disk)."""
    mark: str | None = None
    failures: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    """Why documents were skipped (reason -> count); raw stage only."""

    def add_failure(self, message: str) -> None:
        self.documents_failed += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(message)

    def as_dict(self) -> dict:
        return asdict(self)
