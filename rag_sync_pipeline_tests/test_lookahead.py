"""Embedding ahead (sync.lookahead): vectors encoded while the earlier stages run are exactly the vectors the
embeddings stage would have encoded, count as embedded in this run, and never replace the vector cache."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from rag_sync_pipeline.identity import sha256_hex
from rag_sync_pipeline.sources.local import LocalFolderSource
from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline.sync import lookahead
from rag_sync_pipeline.sync.stages import (
    StageRun,
    cached_vectors,
    markdown_of,
    sync_chunks,
    sync_embeddings,
    sync_markdown,
    sync_raw,
)
from rag_sync_pipeline.transform.chunking import MarkdownChunker
from rag_sync_pipeline_tests.conftest import paragraph


def _wait_for(ahead: lookahead.LookAhead, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(ahead.vectors) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def _chunker(embedder) -> MarkdownChunker:
    return MarkdownChunker(embedder.tokenizer, embedder.max_seq_length)


def test_look_ahead_encodes_the_chunks_of_fetched_rows_but_not_what_the_cache_has(embedder):
    chunker = _chunker(embedder)
    rows = [{"markdown": f"# {topic}\n\n{paragraph(topic)}"} for topic in ("failover", "backup", "restore")]
    rows.append({"markdown": None})  # a document the markdown stage will fail: skipped here
    texts = {sha256_hex(c.text): c.text for row in rows[:3] for c in chunker.chunk(row["markdown"])}
    in_cache = sorted(texts)[0]

    ahead = lookahead.LookAhead(embedder, lambda: chunker, lambda row: row["markdown"],
                                lambda hashes: [h for h in hashes if h == in_cache])
    ahead.submit(rows)
    _wait_for(ahead, len(texts) - 1)
    vectors = ahead.stop()

    assert set(vectors) == set(texts) - {in_cache}
    expected = embedder.encode([texts[h] for h in vectors])
    cosines = [float(np.dot(vectors[h], e)) for h, e in zip(vectors, expected, strict=True)]
    assert min(cosines) > 0.9999  # one torch thread instead of two: the same vectors up to rounding
    ahead.submit(rows)  # stopped: takes nothing more
    assert len(ahead.vectors) == len(vectors)


def test_vectors_encoded_ahead_are_stored_and_counted_as_embedded(embedder, tmp_path: Path):
    root = tmp_path / "corpus" / "eng"
    root.mkdir(parents=True)
    for topic in ("failover", "backup", "restore", "upgrade"):
        (root / f"{topic}.md").write_text(f"# {topic}\n\n{paragraph(topic, 12)}\n\n## More\n\n{paragraph(topic)}\n")
    store = LanceStore(str(tmp_path / "lancedb"))
    run = StageRun(store=store, source="local", partition="eng", run_id="r1", log=lambda _: None)
    key = ("r1", "local", "eng")
    ahead = lookahead.start(key, embedder, lambda: _chunker(embedder), lambda row: markdown_of(run, row)[0],
                            lambda hashes: cached_vectors(run, embedder.model_id, hashes, ("text_hash",)))
    run.look_ahead = ahead.submit

    sync_raw(run, LocalFolderSource("local", tmp_path / "corpus"))
    sync_markdown(run)
    chunks = sync_chunks(run, _chunker(embedder), embedder.model_id)
    _wait_for(ahead, chunks.chunks_written)
    report = sync_embeddings(run, embedder, lookahead.finish(key))

    assert report.chunks_embedded == chunks.chunks_written > 4
    assert report.chunks_embedded_ahead == report.chunks_embedded
    rows = store.read(schemas.EMBEDDINGS_TABLE, partition_filter("local", "eng"), ["text", "vector"]).to_pylist()
    expected = embedder.encode([r["text"] for r in rows])
    assert min(float(np.dot(r["vector"], e)) for r, e in zip(rows, expected, strict=True)) > 0.9999
    assert lookahead.finish(key) == {}  # finished once; nothing left running for this run


def test_documents_fetched_far_ahead_are_left_to_the_stages_and_let_go_on_stop(embedder):
    busy = threading.Event()

    def chunker_after_a_wait() -> MarkdownChunker:
        busy.wait(30)  # the thread is held up here while the fetching goes on
        return _chunker(embedder)

    ahead = lookahead.LookAhead(embedder, chunker_after_a_wait, lambda row: row["markdown"], lambda h: [])
    for number in range(10 * lookahead.MAX_WAITING):
        ahead.submit([{"markdown": f"# Page {number}\n\n{paragraph('page')}"}])
    waiting = ahead._queue.qsize() + len(ahead._pending)
    assert waiting <= lookahead.MAX_WAITING + lookahead.DOCUMENTS_AT_ONCE
    busy.set()
    ahead.stop()
    assert ahead._queue.empty() and ahead._pending == []


def test_starting_a_look_ahead_stops_the_previous_one(embedder):
    first = lookahead.start(("r1", "local", "a"), embedder, lambda: _chunker(embedder), lambda row: row, lambda h: [])
    second = lookahead.start(("r2", "local", "a"), embedder, lambda: _chunker(embedder), lambda row: row, lambda h: [])
    try:
        assert not first._thread.is_alive()
        assert second._thread.is_alive()
        assert lookahead.finish(("r1", "local", "a")) == {}
    finally:
        lookahead.finish(("r2", "local", "a"))
    assert not second._thread.is_alive()
