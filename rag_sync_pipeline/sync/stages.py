"""The four stages. Each makes its table for one partition consistent with its upstream:

    source listing -> raw_documents -> markdown -> chunks -> embeddings

Every stage reads its upstream's versions and its own ledger (the upstream version it last handled per
document), handles only the difference, and commits per batch of documents: first the rows (one atomic
`merge_insert`), then the ledger. A run killed in between leaves the old rows or the new ones; the ledger then
still names the old version, so the next run redoes that batch, which writes the same ids again. A stage's mark
(the source high-water mark its table now covers) is written only after its last batch, and is what the
sensor compares with the source.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from rag_sync_pipeline.identity import canonical_json, chunk_id, document_key, sha256_hex
from rag_sync_pipeline.settings import DEFAULT_FETCH_CONCURRENCY, DEFAULT_MAX_MARKDOWN_BYTES
from rag_sync_pipeline.sources import DocumentError, Source
from rag_sync_pipeline.store import LanceStore, LedgerEntry, schemas
from rag_sync_pipeline.store.lance import in_list, now, partition_filter, quote
from rag_sync_pipeline.sync.plan import batched, plan_stage
from rag_sync_pipeline.sync.report import StageReport
from rag_sync_pipeline.sync.up_to_date import reconciliation_due
from rag_sync_pipeline.transform.chunking import MarkdownChunker
from rag_sync_pipeline.transform.embedding import Embedder
from rag_sync_pipeline.transform.markdown import ConversionError, to_markdown

STAGES = ("raw_documents", "markdown", "chunks", "embeddings")
MAX_TITLE_CHARS = 500
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
CHUNKER_VERSION = "sections-v1"


@dataclass
class StageRun:
    """Everything a stage needs for one partition; the same whatever launched the run."""

    store: LanceStore
    source: str
    partition: str
    run_id: str = ""
    full_refresh: bool = False
    documents_per_commit: int = 200
    max_markdown_bytes: int = DEFAULT_MAX_MARKDOWN_BYTES
    # raw documents fetched at once (the source's client paces and bounds requests)
    fetch_concurrency: int = DEFAULT_FETCH_CONCURRENCY
    log: Callable[[str], None] = field(default=print)
    # called once the raw stage knows documents changed: starts loading the model while they are fetched
    warm_up: Callable[[], None] | None = None
    # given each fetched document's row: starts the later stages' work on it early (see sync.lookahead)
    look_ahead: Callable[[list[dict[str, Any]]], None] | None = None


@dataclass(frozen=True)
class StageClock:
    wall: float = field(default_factory=time.monotonic)
    cpu: float = field(default_factory=time.process_time)


@dataclass
class BatchOutput:
    rows: list[dict[str, Any]] = field(default_factory=list)
    doc_hashes: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _reconcile(run: StageRun, stage: str, table: str, schema, key: str, upstream: dict[str, str],
               complete: bool, transform: Callable[[list[str]], BatchOutput], report: StageReport,
               retry_failures: bool = False, produces: Callable[[str], str] | None = None,
               on_work: Callable[[], None] | None = None) -> None:
    """`retry_failures`: a failed document is tried again by the next run even if its version has not moved.
    `produces`: the doc hash this stage's current settings make from an upstream version; a document whose
    recorded hash differs was made with other settings (another chunker) and is redone.
    `on_work`: called before the first batch when there are documents to process."""
    ledger = run.store.read_ledger(stage, run.source, run.partition)
    plan = plan_stage(upstream, ledger, complete=complete, full_refresh=run.full_refresh, produces=produces)
    report.documents_unchanged = plan.unchanged
    scope = partition_filter(run.source, run.partition)
    added = set(plan.added)
    if plan.to_process or plan.deleted:
        run.log(f"{stage} {run.source}/{run.partition}: {len(plan.added)} new, {len(plan.changed)} changed, "
                f"{len(plan.deleted)} deleted, {plan.unchanged} unchanged")
    if plan.to_process and on_work is not None:
        on_work()

    for batch in batched(plan.to_process, run.documents_per_commit):
        output = transform(batch)
        succeeded = [d for d in batch if d not in output.failures]
        run.store.replace_documents(table, schema, key, scope, succeeded, output.rows)
        entries = {d: LedgerEntry(upstream[d], output.doc_hashes[d]) for d in succeeded}
        for doc_id, message in output.failures.items():
            # Keep what was indexed: the old rows stay, and so does the hash downstream stages know.
            previous = ledger.get(doc_id)
            entries[doc_id] = LedgerEntry(None if retry_failures else upstream[doc_id],
                                          previous.doc_hash if previous else None)
            report.add_failure(message)
            run.log(f"failed: {message}")
        run.store.write_ledger(stage, run.source, run.partition, batch, entries)
        run.store.record_failures(stage, run.source, run.partition, batch,
                                  {d: (upstream[d], m) for d, m in output.failures.items()}, run.run_id)
        for doc_id in succeeded:
            if doc_id in added:
                report.documents_added += 1
            elif ledger[doc_id].doc_hash == output.doc_hashes[doc_id] and not run.full_refresh:
                report.documents_unchanged += 1
            else:
                report.documents_updated += 1

    for batch in batched(plan.deleted, run.documents_per_commit):
        run.store.replace_documents(table, schema, key, scope, batch, [])
        run.store.write_ledger(stage, run.source, run.partition, batch, {})
        run.store.record_failures(stage, run.source, run.partition, batch, {}, run.run_id)
        report.documents_deleted += len(batch)


def _finish(run: StageRun, stage: str, table: str, mark: str | None, report: StageReport,
            started: StageClock, reconciled_at: datetime | None = None) -> StageReport:
    ledger = run.store.read_ledger(stage, run.source, run.partition)
    report.documents_total = sum(1 for entry in ledger.values() if entry.doc_hash is not None)
    report.rows_total = run.store.count_rows(table, partition_filter(run.source, run.partition))
    report.mark = mark
    run.store.write_partition_state(run.source, run.partition, stage, mark, report.documents_total,
                                    report.rows_total, run.run_id, reconciled_at)
    report.duration_s = round(time.monotonic() - started.wall, 3)
    report.cpu_s = round(time.process_time() - started.cpu, 2)
    return report


def _upstream(run: StageRun, stage: str) -> tuple[dict[str, str], str | None]:
    """The upstream stage's document hashes and the mark it committed, read before any work starts."""
    state = run.store.read_partition_state(run.source, run.partition).get(stage)
    ledger = run.store.read_ledger(stage, run.source, run.partition)
    hashes = {doc_id: entry.doc_hash for doc_id, entry in ledger.items() if entry.doc_hash is not None}
    return hashes, state["mark"] if state else None


def _document_fields(run: StageRun, doc_id: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"source": run.source, "partition": run.partition, "doc_id": doc_id, "title": row["title"],
            "url": row["url"], "path": row["path"], "last_modified": row["last_modified"]}


# -- raw_documents: the source's documents, fetched only when their version token moved ----------------

def sync_raw(run: StageRun, source: Source, *, reconcile: bool = False) -> StageReport:
    """Fetch new and changed documents; drop deleted ones when the listing is complete.

    An incremental source lists only what moved since the committed mark, unless its deletion strategy
    (or `reconcile`, or a full refresh) calls for a complete listing.
    """
    started, report = StageClock(), StageReport("raw_documents")
    calls_before = source.api_calls
    committed = run.store.read_partition_state(run.source, run.partition).get("raw_documents")
    reconciled_at = committed.get("reconciled_at") if committed else None
    full = (not committed or run.full_refresh or reconcile
            or reconciliation_due(source.deletion_strategy, reconciled_at))
    listing = source.list_documents(run.partition, None if full else committed["mark"])
    upstream = {ref.doc_id: ref.version for ref in listing.refs}
    refs = {ref.doc_id: ref for ref in listing.refs}
    report.skipped = dict(listing.skipped)
    report.documents_skipped = sum(listing.skipped.values())

    transient_failures: list[str] = []

    def fetch_one(doc_id: str) -> tuple[str, dict[str, Any] | DocumentError]:
        try:
            row = _raw_row(run, doc_id, source.fetch(run.partition, refs[doc_id]))
        except DocumentError as error:
            return doc_id, error
        if run.look_ahead is not None:
            run.look_ahead([row])  # as soon as it is here, not once its whole batch is
        return doc_id, row

    def fetch(batch: list[str]) -> BatchOutput:
        # Fetching waits on the network, so several documents are fetched at once; a PartitionError still
        # stops the run (it is re-raised when its result is read), a DocumentError fails only its document.
        output = BatchOutput()
        with ThreadPoolExecutor(max_workers=max(1, run.fetch_concurrency)) as pool:
            results = list(pool.map(fetch_one, batch))
        for doc_id, row in results:
            if isinstance(row, DocumentError):
                output.failures[doc_id] = str(row)
                if not row.permanent:
                    transient_failures.append(doc_id)
                continue
            output.doc_hashes[doc_id] = row["doc_hash"]
            output.rows.append(row)
        return output

    # A fetch can fail for reasons that heal without the version moving (a Notion page shared with the
    # integration again keeps its last_edited_time; a network outage), so failed fetches are retried.
    _reconcile(run, "raw_documents", schemas.RAW_TABLE, schemas.RAW_SCHEMA, "key", upstream, listing.complete,
               fetch, report, retry_failures=True, on_work=run.warm_up)
    report.api_calls = source.api_calls - calls_before
    mark = listing.mark
    if transient_failures:
        # A failed document's change is not indexed, and an incremental listing from the new mark would not
        # name it again: keep the committed mark, so the sensor asks again and the next listing covers it.
        # Permanent failures (gone, unshared, too large) let the mark move: holding it would request a run
        # on every tick for a document that cannot change until someone edits it, which moves its version.
        mark = committed["mark"] if committed else None
    return _finish(run, "raw_documents", schemas.RAW_TABLE, mark, report, started,
                   now() if listing.complete else reconciled_at)


def _raw_row(run: StageRun, doc_id: str, document) -> dict[str, Any]:
    path = " / ".join(document.path)
    metadata_json = canonical_json(document.metadata)
    doc_hash = sha256_hex(document.content, document.content_type, document.title, document.url, path, metadata_json)
    return {
        "key": document_key(run.source, run.partition, doc_id), "source": run.source, "partition": run.partition,
        "doc_id": doc_id, "title": document.title, "url": document.url, "path": path,
        "last_modified": document.last_modified, "version": document.version, "doc_hash": doc_hash,
        "content_type": document.content_type, "content": document.content, "metadata_json": metadata_json,
        "synced_at": now(),
    }


# -- markdown: every format to Markdown ------------------------------------------------------------------

def clean_title(title: str) -> str:
    """A title fit to show and cite: control characters (NUL, escape sequences, newlines) become spaces."""
    return " ".join(CONTROL_CHARACTERS.sub(" ", title).split())[:MAX_TITLE_CHARS]


def markdown_of(run: StageRun, row: dict[str, Any]) -> tuple[str, str]:
    """(markdown, title found in it), or ConversionError naming the cause."""
    try:
        markdown, found_title = to_markdown(row["content"], row["content_type"])
    except ConversionError:
        raise
    except Exception as error:  # noqa: BLE001 - a converter bug on one odd document must not fail the run
        raise ConversionError(f"conversion failed: {type(error).__name__}: {error}") from None
    size = len(markdown.encode("utf-8"))
    if size > run.max_markdown_bytes:
        raise ConversionError(f"{size} bytes of Markdown is over the {run.max_markdown_bytes}-byte limit "
                              "(RAG_MAX_MARKDOWN_BYTES); split the document or raise the limit")
    return markdown, found_title


def sync_markdown(run: StageRun) -> StageReport:
    started, report = StageClock(), StageReport("markdown")
    upstream, mark = _upstream(run, "raw_documents")

    def convert(batch: list[str]) -> BatchOutput:
        output = BatchOutput()
        for row in run.store.read_documents(schemas.RAW_TABLE, run.source, run.partition, batch):
            doc_id = row["doc_id"]
            try:
                markdown, found_title = markdown_of(run, row)
            except ConversionError as error:
                output.failures[doc_id] = f"{run.source} document {doc_id!r} in {run.partition}: {error}"
                continue
            title = clean_title(row["title"] or "") or clean_title(found_title) or PurePosixPath(doc_id).stem
            fields = {**_document_fields(run, doc_id, row), "title": title}
            doc_hash = sha256_hex(markdown, title, row["url"] or "", row["path"] or "", row["metadata_json"] or "")
            output.doc_hashes[doc_id] = doc_hash
            output.rows.append({"key": row["key"], **fields, "doc_hash": doc_hash, "markdown": markdown,
                                "metadata_json": row["metadata_json"], "synced_at": now()})
        _missing_rows_fail(run, batch, output, "raw_documents")
        return output

    _reconcile(run, "markdown", schemas.MARKDOWN_TABLE, schemas.MARKDOWN_SCHEMA, "key", upstream, True, convert,
               report)
    return _finish(run, "markdown", schemas.MARKDOWN_TABLE, mark, report, started)


def _missing_rows_fail(run: StageRun, batch: list[str], output: BatchOutput, upstream_stage: str) -> None:
    """A document the upstream ledger names but whose rows are gone is retried, never silently dropped."""
    for doc_id in batch:
        if doc_id not in output.doc_hashes and doc_id not in output.failures:
            output.failures[doc_id] = (f"{run.source} document {doc_id!r} in {run.partition}: no rows in "
                                       f"{upstream_stage}; re-run with full refresh")


# -- chunks: structure-aware, token-bounded --------------------------------------------------------------

def sync_chunks(run: StageRun, chunker: MarkdownChunker, chunker_id: str) -> StageReport:
    started, report = StageClock(), StageReport("chunks")
    upstream, mark = _upstream(run, "markdown")
    fingerprint = f"{CHUNKER_VERSION}:{chunker_id}:{chunker.max_tokens}"

    def split(batch: list[str]) -> BatchOutput:
        output = BatchOutput()
        for row in run.store.read_documents(schemas.MARKDOWN_TABLE, run.source, run.partition, batch):
            doc_id = row["doc_id"]
            fields = _document_fields(run, doc_id, row)
            occurrences: dict[str, int] = {}
            try:
                chunks = chunker.chunk(row["markdown"])
            except Exception as error:  # noqa: BLE001 - one document the splitter cannot handle fails alone
                output.failures[doc_id] = (f"{run.source} document {doc_id!r} in {run.partition}: chunking failed: "
                                           f"{type(error).__name__}: {error}")
                continue
            for index, chunk in enumerate(chunks):
                text_hash = sha256_hex(chunk.text)
                occurrence = occurrences.get(text_hash, 0)
                occurrences[text_hash] = occurrence + 1
                output.rows.append({
                    "id": chunk_id(run.source, run.partition, doc_id, text_hash, occurrence), **fields,
                    "chunk_index": index, "text": chunk.text, "text_hash": text_hash,
                    "heading_path": " > ".join(chunk.heading_path), "token_count": chunk.token_count,
                    "metadata_json": row["metadata_json"],
                })
            output.doc_hashes[doc_id] = sha256_hex(row["doc_hash"], fingerprint)
        _missing_rows_fail(run, batch, output, "markdown")
        report.chunks_written += len(output.rows)
        return output

    _reconcile(run, "chunks", schemas.CHUNKS_TABLE, schemas.CHUNKS_SCHEMA, "id", upstream, True, split, report,
               produces=lambda upstream_hash: sha256_hex(upstream_hash, fingerprint))
    return _finish(run, "chunks", schemas.CHUNKS_TABLE, mark, report, started)


# -- embeddings: the final table; a vector is reused whenever (model, chunk text) is unchanged -----------

def cached_vectors(run: StageRun, model_id: str, text_hashes: list[str],
                   columns: tuple[str, ...] = ("text_hash", "vector")) -> dict[str, list[float] | None]:
    """The vector cache: the final table's vectors of `model_id` for these chunk texts (by hash). With
    `columns=("text_hash",)`, only which of them it has (each value None)."""
    cached: dict[str, list[float] | None] = {}
    if run.store.table(schemas.EMBEDDINGS_TABLE) is None:
        return cached
    for group in batched(sorted(set(text_hashes)), 500):
        where = f"model_id = {quote(model_id)} AND {in_list('text_hash', group)}"
        for row in run.store.read(schemas.EMBEDDINGS_TABLE, where, list(columns)).to_pylist():
            cached.setdefault(row["text_hash"], row.get("vector"))
    return cached


def sync_embeddings(run: StageRun, embedder: Embedder, ready: dict[str, np.ndarray] | None = None) -> StageReport:
    """`ready`: vectors this run's look-ahead already encoded, by text hash (taken out as they are used)."""
    started, report = StageClock(), StageReport("embeddings")
    ready = ready if ready is not None else {}
    upstream, mark = _upstream(run, "chunks")
    from rag_sync_pipeline.store.index_settings import embeddings_schema
    from rag_sync_pipeline.sync.rebuild import needs_rebuild, rebuild_embeddings

    schema = embeddings_schema(embedder.dimension, embedder.model_id, embedder.source or None)
    if needs_rebuild(run.store, embedder):
        # The model changed (maybe its vector size too): rebuild the whole table blue/green, then sync as usual.
        run.log(f"{schemas.EMBEDDINGS_TABLE} holds vectors of another model: rebuilding for {embedder.model_id}")
        rebuilt = rebuild_embeddings(run.store, embedder, embedder.source or None, run.log)
        report.chunks_embedded += rebuilt["embedded"]

    def embed(batch: list[str]) -> BatchOutput:
        output = BatchOutput()
        chunks = run.store.read_documents(schemas.CHUNKS_TABLE, run.source, run.partition, batch)
        vectors = cached_vectors(run, embedder.model_id, [c["text_hash"] for c in chunks])
        missing = {c["text_hash"]: c["text"] for c in chunks if c["text_hash"] not in vectors}
        ahead = {h: ready.pop(h) for h in missing if h in ready}
        to_encode = [h for h in missing if h not in ahead]
        encoded = zip(to_encode, embedder.encode([missing[h] for h in to_encode]), strict=True) if to_encode else ()
        for text_hash, vector in itertools.chain(ahead.items(), encoded):
            vectors[text_hash] = vector.tolist()
        report.chunks_embedded += len(missing)  # encoded in this run, here or ahead
        report.chunks_embedded_ahead += len(ahead)
        report.chunks_reused += len(chunks) - sum(1 for c in chunks if c["text_hash"] in missing)
        for chunk in chunks:
            metadata = {k: chunk[k] for k in ("source", "partition", "doc_id", "title", "url", "heading_path",
                                              "path", "last_modified", "chunk_index")}
            output.rows.append({
                "id": chunk["id"], "vector": vectors[chunk["text_hash"]], "text": chunk["text"],
                "metadata": {**metadata, "extra": chunk["metadata_json"]}, **metadata,
                "text_hash": chunk["text_hash"], "model_id": embedder.model_id,
            })
        for doc_id in batch:
            output.doc_hashes[doc_id] = sha256_hex(upstream[doc_id], embedder.model_id)
        report.chunks_written += len(output.rows)
        return output

    _reconcile(run, "embeddings", schemas.EMBEDDINGS_TABLE, schema, "id", upstream, True, embed, report)
    return _finish(run, "embeddings", schemas.EMBEDDINGS_TABLE, mark, report, started)
