"""Embedding ahead: while the raw stage fetches, a background thread converts, chunks and encodes the documents
already fetched, so that the embeddings stage finds part of its vectors ready.

Why: fetching waits on the source's API (a Confluence page is 100-300 ms away, and a client asks 4 at a time),
so the machine idles while encoding, the cost of a sync, has not started. The look-ahead stops when the raw
stage ends: the markdown and chunks stages keep a core busy in Python, and encoding beside them slowed them by
more than it saved (measured on 2 cores).

What it does not change: it commits nothing. Each stage still converts, chunks and writes its own table (the
thread redoes their pure work, which is cheap beside encoding), and the vectors wait in memory, keyed like the
vector cache by (model, chunk text), so a vector taken from here is exactly one the cache could have served.
Texts the vector cache already has are not encoded. The thread encodes with one torch thread fewer than
usual, leaving a core to the fetching, in small slices; stopping waits for the slice being encoded. Torch
backend only: an ONNX Runtime session's thread pool is fixed when it is created.

One look-ahead lives per process: the stages of a run share a process (in_process_executor), and starting the
next run's look-ahead stops the previous one, so a run that failed before its embeddings stage leaves at most
its vectors behind until then.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import numpy as np

from rag_sync_pipeline.identity import sha256_hex
from rag_sync_pipeline.transform.chunking import MarkdownChunker
from rag_sync_pipeline.transform.embedding import Embedder

# At most this many fetched documents are converted and chunked before their texts are encoded.
DOCUMENTS_AT_ONCE = 25
# Documents waiting for the thread beyond this are not looked at (the stages still do them): fetching can run
# far ahead of encoding, and each waiting row holds its document's content.
MAX_WAITING = 4 * DOCUMENTS_AT_ONCE
# Texts encoded between two looks at the stop flag: the embeddings stage waits at most one slice (~1 s).
SLICE = 16
# The most vectors held (~75 MB at 384 dimensions); beyond it the rest is left to the embeddings stage.
MAX_VECTORS = 50_000

_lock = threading.Lock()
_active: dict[tuple[str, str, str], LookAhead] = {}


class LookAhead:
    def __init__(self, embedder: Embedder, make_chunker: Callable[[], MarkdownChunker],
                 to_markdown: Callable[[dict], str], cached: Callable[[list[str]], Iterable[str]]) -> None:
        """`make_chunker()`: the chunks stage's chunker (built on this thread: it reads the tokenizer);
        `to_markdown(raw_row)`: the markdown stage's conversion (raises on a bad document, which is then left
        to that stage to report); `cached(text_hashes)`: those the vector cache already holds."""
        self.embedder = embedder
        self.make_chunker = make_chunker
        self.chunker: MarkdownChunker | None = None
        self.to_markdown = to_markdown
        self.cached = cached
        self.vectors: dict[str, np.ndarray] = {}
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()
        self._pending: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        # Daemon: a process must never wait at exit for vectors nobody will take.
        self._thread = threading.Thread(target=self._work, name="embed-ahead", daemon=True)
        self._thread.start()

    def submit(self, raw_rows: list[dict[str, Any]]) -> None:
        if not self._stopping.is_set() and self._queue.qsize() < MAX_WAITING:
            self._queue.put(raw_rows)

    def stop(self) -> dict[str, np.ndarray]:
        """Stop after the slice being encoded (again: a no-op); the vectors encoded so far, by text hash."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join()
        self._pending = []
        while not self._queue.empty():  # let go of the documents still waiting
            self._queue.get_nowait()
        return self.vectors

    def _work(self) -> None:
        try:
            while not self._stopping.is_set():
                rows = self._next_rows()
                if rows is None:
                    return
                self._encode(self._new_texts(rows))
        except Exception:  # noqa: BLE001 - looking ahead is only a head start: the stages do and report the work
            return

    def _next_rows(self) -> list[dict[str, Any]] | None:
        """What was fetched since the last look, up to DOCUMENTS_AT_ONCE documents (waiting for the first);
        None once stopped."""
        while len(self._pending) < DOCUMENTS_AT_ONCE:
            try:
                rows = self._queue.get(block=not self._pending)
            except queue.Empty:
                break
            if rows is None:
                return None
            self._pending.extend(rows)
        taken, self._pending = self._pending[:DOCUMENTS_AT_ONCE], self._pending[DOCUMENTS_AT_ONCE:]
        return taken

    def _new_texts(self, rows: list[dict[str, Any]]) -> dict[str, str]:
        self.chunker = self.chunker or self.make_chunker()
        texts: dict[str, str] = {}
        for row in rows:
            try:
                markdown = self.to_markdown(row)
                texts.update((sha256_hex(c.text), c.text) for c in self.chunker.chunk(markdown))
            except Exception:  # noqa: BLE001, S112 - the markdown or chunks stage reports this document
                continue
        known = set(self.cached(list(texts))) | self.vectors.keys()
        return {h: t for h, t in texts.items() if h not in known}

    def _encode(self, texts: dict[str, str]) -> None:
        hashes = list(texts)
        with _fewer_threads():
            for start in range(0, len(hashes), SLICE):
                if self._stopping.is_set() or len(self.vectors) >= MAX_VECTORS:
                    return
                part = hashes[start:start + SLICE]
                self.vectors.update(zip(part, self.embedder.encode([texts[h] for h in part]), strict=True))


@contextmanager
def _fewer_threads():
    """Torch's intra-op threads, for this thread only (OpenMP's setting is per thread): one fewer than torch
    would use, so the stages keep a core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before - 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def start(key: tuple[str, str, str], embedder: Embedder, make_chunker: Callable[[], MarkdownChunker],
          to_markdown: Callable[[dict], str], cached: Callable[[list[str]], Iterable[str]]) -> LookAhead | None:
    """A look-ahead for run `key` (run id, source, partition), stopping any other; None for non-torch backends."""
    if embedder.backend != "torch":
        return None
    with _lock:
        for other in _active.values():
            other.stop()
        _active.clear()
        _active[key] = ahead = LookAhead(embedder, make_chunker, to_markdown, cached)
    return ahead


def finish(key: tuple[str, str, str]) -> dict[str, np.ndarray]:
    """Stop the look-ahead of run `key`, if this process has one; the vectors it encoded."""
    with _lock:
        ahead = _active.pop(key, None)
    return ahead.stop() if ahead is not None else {}
