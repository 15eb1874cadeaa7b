"""What the fault, crash and concurrency tests share: running the four stages and auditing the index.

Every document the tests write carries a revision marker (`rev<N>`) in each of its sections, so the audit can
tell from the final table alone whether a document is at its old or its new revision, mixed, or missing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from rag_sync_pipeline.sources import PartitionError, Source
from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline.sync.stages import StageRun, sync_chunks, sync_embeddings, sync_markdown, sync_raw
from rag_sync_pipeline.transform.chunking import MarkdownChunker
from rag_sync_pipeline.transform.embedding import Embedder

MARKER = re.compile(r"\brev(\d+)\b")
STAGE_TABLES = {"raw_documents": schemas.RAW_TABLE, "markdown": schemas.MARKDOWN_TABLE,
                "chunks": schemas.CHUNKS_TABLE, "embeddings": schemas.EMBEDDINGS_TABLE}


def sync_all(store: LanceStore, source: Source, name: str, partition: str, embedder: Embedder,
             documents_per_commit: int = 200) -> dict:
    """The four stages in order, as one Dagster run does them; a source error stops the run where it happens."""
    run = StageRun(store, name, partition, run_id="test", documents_per_commit=documents_per_commit,
                   log=lambda _: None)
    chunker = MarkdownChunker(embedder.tokenizer, 64)
    return {"raw_documents": sync_raw(run, source), "markdown": sync_markdown(run),
            "chunks": sync_chunks(run, chunker, embedder.model_id), "embeddings": sync_embeddings(run, embedder)}


def indexed_revisions(store: LanceStore, source: str, partition: str) -> dict[str, set[int]]:
    """The revision markers each document's chunks carry in the final table."""
    found: dict[str, set[int]] = defaultdict(set)
    rows = store.read(schemas.EMBEDDINGS_TABLE, partition_filter(source, partition), ["doc_id", "text"])
    for row in rows.to_pylist():
        found[row["doc_id"]].update(int(m) for m in MARKER.findall(row["text"]))
    return dict(found)


@dataclass
class Audit:
    lost_changes: list[str] = field(default_factory=list)
    """Documents not at their expected revision (stale, missing, or deleted but still indexed)."""
    partial_docs: list[str] = field(default_factory=list)
    """Documents whose chunks mix revisions, or whose rows and ledger disagree in some stage."""
    duplicate_chunks: int = 0


def audit(store: LanceStore, source: str, partition: str, expected: dict[str, int] | None = None,
          allowed: dict[str, set[int]] | None = None) -> Audit:
    """Check the index against `expected` (doc id -> revision it must be at) or, while a change may still be
    pending, against `allowed` (doc id -> revisions it may be at; a document absent from `allowed` must be
    absent from the index). Either way every document must be whole: one revision, rows matching the ledger."""
    result = Audit()
    revisions = indexed_revisions(store, source, partition)
    if expected is not None:
        allowed = {doc_id: {revision} for doc_id, revision in expected.items()}
    for doc_id in sorted(set(revisions) | set(allowed or {})):
        if len(revisions.get(doc_id, ())) > 1:
            result.partial_docs.append(f"{doc_id}: mixed revisions {sorted(revisions[doc_id])}")
        elif not revisions.get(doc_id, set()) <= (allowed or {}).get(doc_id, set()) or (
                expected is not None and doc_id in expected and not revisions.get(doc_id)):
            result.lost_changes.append(f"{doc_id}: indexed {sorted(revisions.get(doc_id, ()))}, "
                                       f"expected {sorted((allowed or {}).get(doc_id, ())) or 'absent'}")
    scope = partition_filter(source, partition)
    for stage, table in STAGE_TABLES.items():
        ledger = {d for d, e in store.read_ledger(stage, source, partition).items() if e.doc_hash is not None}
        rows = set(store.read(table, scope, ["doc_id"]).column("doc_id").to_pylist())
        result.partial_docs += [f"{doc_id}: {stage} rows and ledger disagree" for doc_id in sorted(ledger ^ rows)]
    chunk_ids = store.read(schemas.CHUNKS_TABLE, scope, ["id"]).column("id").to_pylist()
    vector_ids = store.read(schemas.EMBEDDINGS_TABLE, scope, ["id"]).column("id").to_pylist()
    result.duplicate_chunks = (len(chunk_ids) - len(set(chunk_ids))) + (len(vector_ids) - len(set(vector_ids)))
    if expected is not None and set(chunk_ids) != set(vector_ids):
        result.partial_docs.append("chunks and embeddings hold different chunk ids")
    return result


def committed_mark(store: LanceStore, source: str, partition: str, stage: str = "raw_documents") -> str | None:
    return store.read_partition_state(source, partition).get(stage, {}).get("mark")


def attempt_sync(store: LanceStore, source: Source, name: str, partition: str, embedder: Embedder,
                 documents_per_commit: int = 200) -> tuple[str, str]:
    """The four stages through an injected fault: the outcome ("completes", "document fails" or "fails") and
    the message a user would read (the recorded document failures, or the run's error)."""
    try:
        reports = sync_all(store, source, name, partition, embedder, documents_per_commit)
    except PartitionError as error:
        return "fails", str(error)
    outcome = "document fails" if reports["raw_documents"].documents_failed else "completes"
    return outcome, "; ".join(reports["raw_documents"].failures)


def check_index_after_fault(store: LanceStore, source: str, partition: str, outcome: str,
                            allowed: dict[str, set[int]], expected: dict[str, int],
                            before_mark: str | None) -> tuple[Audit, str | None]:
    """Every document whole, at its old or its new revision; the mark moved only if everything is indexed.
    Returns the audit of that moment and the committed mark, for the test's figures."""
    during = audit(store, source, partition, allowed=allowed)
    now_indexed = audit(store, source, partition, expected=expected)
    mark = committed_mark(store, source, partition)
    assert during.partial_docs == [] and during.lost_changes == [] and during.duplicate_chunks == 0
    if outcome == "completes":
        assert now_indexed.lost_changes == [] and mark != before_mark
    else:
        assert now_indexed.lost_changes != [] and mark == before_mark
    return during, mark


def fault_figures(label: str, outcome: str, during: Audit, after: Audit, mark: str | None,
                  before_mark: str | None) -> str:
    """The line each fault test prints: what the fault did, and what the recovery run left."""
    return (f"\nFAULT {label}: outcome={outcome}, partial_docs={len(during.partial_docs)}, "
            f"lost_changes={len(after.lost_changes)}, duplicate_chunks={after.duplicate_chunks}, "
            f"mark_advanced_early={int(outcome != 'completes' and mark != before_mark)}")
