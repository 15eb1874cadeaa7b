"""Table layouts. One table per stage, shared by every source, with `source` and `partition` columns.

The final table (`embeddings`) follows LanceDB's conventions so LanceDB's own search and the LanceDB stores of
LangChain and LlamaIndex read it as it is: `id`, `vector`, `text`, `metadata` (a struct), plus the fields to
filter and cite by as columns.
"""

from __future__ import annotations

import pyarrow as pa

RAW_TABLE = "raw_documents"
MARKDOWN_TABLE = "markdown"
CHUNKS_TABLE = "chunks"
EMBEDDINGS_TABLE = "embeddings"
LEDGER_TABLE = "doc_ledger"
PARTITION_STATE_TABLE = "partition_state"
FAILURES_TABLE = "failures"

_DOCUMENT_FIELDS = [
    pa.field("source", pa.string(), nullable=False),
    pa.field("partition", pa.string(), nullable=False),
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("title", pa.string()),
    pa.field("url", pa.string()),
    pa.field("path", pa.string()),
    pa.field("last_modified", pa.string()),
]

RAW_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    *_DOCUMENT_FIELDS,
    pa.field("version", pa.string()),
    pa.field("doc_hash", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("content", pa.large_binary()),
    pa.field("metadata_json", pa.string()),
    pa.field("synced_at", pa.timestamp("us", tz="UTC")),
])

MARKDOWN_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    *_DOCUMENT_FIELDS,
    pa.field("doc_hash", pa.string()),
    pa.field("markdown", pa.large_string()),
    pa.field("metadata_json", pa.string()),
    pa.field("synced_at", pa.timestamp("us", tz="UTC")),
])

CHUNKS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    *_DOCUMENT_FIELDS,
    pa.field("chunk_index", pa.int32()),
    pa.field("text", pa.string()),
    pa.field("text_hash", pa.string()),
    pa.field("heading_path", pa.string()),
    pa.field("token_count", pa.int32()),
    pa.field("metadata_json", pa.string()),
])

METADATA_STRUCT = pa.struct([
    pa.field("source", pa.string()),
    pa.field("partition", pa.string()),
    pa.field("doc_id", pa.string()),
    pa.field("title", pa.string()),
    pa.field("url", pa.string()),
    pa.field("heading_path", pa.string()),
    pa.field("path", pa.string()),
    pa.field("last_modified", pa.string()),
    pa.field("chunk_index", pa.int32()),
    pa.field("extra", pa.string()),  # the source's own metadata, as JSON
])


def embeddings_schema(dimension: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dimension)),
        pa.field("text", pa.string()),
        pa.field("metadata", METADATA_STRUCT),
        *_DOCUMENT_FIELDS,
        pa.field("heading_path", pa.string()),
        pa.field("chunk_index", pa.int32()),
        pa.field("text_hash", pa.string()),
        pa.field("model_id", pa.string()),
    ])


LEDGER_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),  # stage|source|partition|doc_id
    pa.field("stage", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("partition", pa.string(), nullable=False),
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("upstream_hash", pa.string()),  # the upstream version this stage last handled
    pa.field("doc_hash", pa.string()),  # what this stage produced from it; null if it never succeeded
    pa.field("updated_at", pa.timestamp("us", tz="UTC")),
])

PARTITION_STATE_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),  # source|partition|stage
    pa.field("source", pa.string(), nullable=False),
    pa.field("partition", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("mark", pa.string()),
    pa.field("documents", pa.int64()),
    pa.field("rows", pa.int64()),
    pa.field("run_id", pa.string()),
    pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    pa.field("reconciled_at", pa.timestamp("us", tz="UTC")),  # last complete listing (deletions found)
])

FAILURES_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),  # stage|source|partition|doc_id
    pa.field("stage", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("partition", pa.string(), nullable=False),
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("upstream_hash", pa.string()),
    pa.field("error", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("failed_at", pa.timestamp("us", tz="UTC")),
])

FIXED_SCHEMAS = {
    RAW_TABLE: RAW_SCHEMA,
    MARKDOWN_TABLE: MARKDOWN_SCHEMA,
    CHUNKS_TABLE: CHUNKS_SCHEMA,
    LEDGER_TABLE: LEDGER_SCHEMA,
    PARTITION_STATE_TABLE: PARTITION_STATE_SCHEMA,
    FAILURES_TABLE: FAILURES_SCHEMA,
}
