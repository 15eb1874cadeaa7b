"""Stable identities for documents, chunks and cached vectors.

Ids are derived from the source and the content, never from a position in a batch, so a re-run writes the
same ids again instead of duplicating rows, and two sources with the same document id cannot collide.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def sha256_hex(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") if isinstance(part, str) else part)
        digest.update(b"\x1f")  # unit separator: ("ab", "c") and ("a", "bc") hash differently
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def document_key(source: str, partition: str, doc_id: str) -> str:
    """The primary key of a document in the one-row-per-document tables."""
    return f"{source}|{partition}|{doc_id}"


def chunk_id(source: str, partition: str, doc_id: str, text_hash: str, occurrence: int) -> str:
    """A chunk's id: document key + chunk text + how often that text already occurred in the document.

    The occurrence number keeps repeated paragraphs apart; leaving the position out keeps the ids of
    untouched chunks stable when a paragraph is inserted above them.
    """
    return sha256_hex(source, partition, doc_id, text_hash, str(occurrence))[:32]
