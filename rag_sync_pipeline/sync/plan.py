"""Which documents a stage must handle: the difference between its upstream and its own ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from rag_sync_pipeline.store import LedgerEntry


@dataclass
class Plan:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def to_process(self) -> list[str]:
        return self.added + self.changed


def plan_stage(upstream: Mapping[str, str], ledger: Mapping[str, LedgerEntry], *, complete: bool,
               full_refresh: bool = False, produces: Callable[[str], str] | None = None) -> Plan:
    """Compare upstream versions with what the stage last handled.

    `complete` says whether `upstream` names every live document; only then are ledger entries missing from
    it deletions (an incremental listing names just what moved).
    """
    plan = Plan()
    for doc_id, version in upstream.items():
        entry = ledger.get(doc_id)
        if entry is None:
            plan.added.append(doc_id)
        elif (full_refresh or entry.upstream_hash != version
              or (produces and entry.doc_hash is not None and entry.doc_hash != produces(version))):
            plan.changed.append(doc_id)
        else:
            plan.unchanged += 1
    if complete:
        plan.deleted = [doc_id for doc_id in ledger if doc_id not in upstream]
    return plan


def batched(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
