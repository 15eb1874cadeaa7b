"""Bad input across the four sources: 41 kinds, each with its expected outcome, through Dagster.

Every document is first synced with good content; then each is replaced by its bad kind and synced again.
A kind either fails alone with a clear error (in the failures table and in the run's metadata, naming the
document and the cause) while its previously indexed chunks stay searchable, or, being odd but valid, is
indexed. Good documents in the same partitions are indexed either way, and no run fails.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag_sync_pipeline.mirror import mirror_partition
from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline_tests.dagster_support import materialize_partition, stage_metadata
from rag_sync_pipeline_tests.documents_support import pdf_bytes
from rag_sync_pipeline_tests.fakes.confluence import confluence_simulator
from rag_sync_pipeline_tests.fakes.notion import block, notion_simulator, text_segment
from rag_sync_pipeline_tests.s3_support import TEST_CREDENTIALS, MotoServer

STORAGE = "application/vnd.atlassian.confluence.storage+xml"
TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class Kind:
    """One kind of bad input: the document it replaces and what must happen to it."""

    source: str
    name: str
    bad: object
    """Bytes for files and objects, (body, title) for Confluence, (blocks, title) for Notion."""
    error: str | None = None
    """A phrase of the expected per-document error; None when the input is odd but valid and must index."""
    text: str | None = None
    """A phrase the indexed chunks must then hold."""
    content_type: str | None = None
    """S3 only: the object's Content-Type."""
    title: Callable[[str], bool] | None = None
    """A check on the indexed title."""


def nested_html(levels: int) -> bytes:
    return ("<ul><li>level" * levels + "deepest" + "</li></ul>" * levels).encode()


def nested_storage_macros(levels: int) -> str:
    opening = '<ac:structured-macro ac:name="expand"><ac:rich-text-body>'
    return opening * levels + "<p>innermost macro text</p>" + "</ac:rich-text-body></ac:structured-macro>" * levels


def nested_blocks(levels: int) -> list[dict]:
    inner: list[dict] = [block("paragraph", "innermost block")]
    for level in range(levels, 0, -1):
        inner = [{**block("bulleted_list_item", f"nesting level {level}", has_children=True), "children": inner}]
    return inner


def no_controls(title: str) -> bool:
    return not re.search(r"[\x00-\x1f\x7f-\x9f]", title)


# Huge tables repeat one row: parsing, truncation and chunking see every row, while the identical chunks are
# embedded once, which keeps the test quick on a CPU.
CSV_5000 = ("\n".join([",".join(f"column {c}" for c in range(30))] + [",".join(f"{c}" for c in range(30))] * 5000)
            + "\n").encode()
TABLE_2000 = ("<table><tr><th>row</th><th>value</th></tr>" + "<tr><td>same row</td><td>same value</td></tr>" * 1999
              + "<tr><td>row 1999</td><td>last value</td></tr></table>").encode()

KINDS = [
    # -- local files ----------------------------------------------------------------------------------------
    Kind("local", "malformed.html", b"<html><body><h1>Malformed</h1><p>Unclosed <b>bold <div><table><tr>"
         b"<td>malformed cell text</p></span></i></body>", text="malformed cell text"),
    Kind("local", "unclosed.html", b"<p>unclosed paragraph survives<ul><li>item one<li>item two",
         text="unclosed paragraph survives"),
    Kind("local", "binary.txt", bytes(range(256)) * 40, error="binary content (NUL bytes)"),
    Kind("local", "invalid_utf8.md", b"# Broken\n\nbad \xc3\x28 bytes", error="invalid UTF-8 at byte 14"),
    Kind("local", "lone_surrogate.md", b"lone surrogate \xed\xa0\x80 here", error="invalid UTF-8"),
    Kind("local", "utf16_bom.txt", "UTF-16 text with a byte-order mark from Zürich".encode("utf-16"),
         text="byte-order mark from Zürich"),
    Kind("local", "empty.md", b"", error="empty document"),
    Kind("local", "whitespace.txt", b"  \n\t\n   \r\n", error="empty document"),
    Kind("local", "nested_lists.html", nested_html(1000), error="nested too deeply"),
    Kind("local", "nested_lists.md", "\n".join("  " * i + f"- item {i}" for i in range(1000)).encode(),
         error="nested too deeply: line"),
    Kind("local", "deep_quote.md", b">" * 1000 + b" quoted deep text", text="quoted deep text"),
    Kind("local", "ten_mb.txt", b"ten megabytes of plain words\n" * (TEN_MB // 29 + 1),
         error="over the 5000000-byte limit (RAG_MAX_MARKDOWN_BYTES)"),
    Kind("local", "huge_line.txt", b"x" * 300_000 + b" tail marker", text="tail marker"),
    Kind("local", "table_2000.html", TABLE_2000, text="row 1999"),
    Kind("local", "nul_late.md", b"plain words " * 1000 + b"\x00 after the NUL", error="binary content"),
    Kind("local", "emoji.md", "# Launch 🚀\n\nStatus ✅ by 👩‍💻 in 東京\n".encode(), text="👩‍💻 in 東京"),
    Kind("local", "control_title.html", b"<title>Quarterly\x07 report\x1b[31m red\x01</title><p>control title "
         b"body</p>", text="control title body", title=lambda t: t == "Quarterly report [31m red"),
    Kind("local", "long_title.html", b"<title>" + b"T" * 20_000 + b"</title><p>long title body</p>",
         text="long title body", title=lambda t: t == "T" * 500),
    Kind("local", "only_images.md", b"![architecture diagram](arch.png)\n\n![team photo](team.jpg)\n",
         text="arch.png"),
    Kind("local", "dir\\..\\..\\backslashes.md", b"# Backslashes\n\nan id with backslashes and dots\n",
         text="backslashes and dots"),
    # -- S3 objects -----------------------------------------------------------------------------------------
    Kind("s3", "binary.html", bytes(range(256)) * 40, content_type="text/html", error="binary content"),
    Kind("s3", "latin1.txt", "Café crème brûlée menu".encode("latin-1"),
         content_type="text/plain; charset=iso-8859-1", text="Café crème brûlée"),
    Kind("s3", "garbage.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 8, error="PDF"),
    Kind("s3", "truncated.pdf", pdf_bytes([["Truncated PDF page"], ["second page"]])[:400],
         error="unreadable PDF"),
    Kind("s3", "not_a.pdf", b"just text named .pdf", error="not a PDF"),
    Kind("s3", "corrupt.docx", b"PK\x03\x04" + bytes(range(256)) * 4, error="unreadable DOCX"),
    Kind("s3", "invalid.json", b'{"runbook": [1, 2', error="invalid JSON"),
    Kind("s3", "huge.csv", CSV_5000, text="(4000 more rows not shown)"),
    Kind("s3", "../../escape.md", b"an S3 key that climbs out with dot dot", text="climbs out with dot dot"),
    Kind("s3", "dir\\..\\..\\win.md", b"an S3 key with backslashes", text="key with backslashes"),
    Kind("s3", "spaces and ünïcode ✓.md", b"a key with spaces and unicode", text="spaces and unicode"),
    # -- Confluence pages (storage XHTML) ------------------------------------------------------------------
    Kind("confluence", "Malformed storage", ('<p>Unclosed <strong>storage<p>second para &bogus; <ac:structured-macro '
         'ac:name="info"><ac:rich-text-body><p>inside an unclosed macro', None), text="inside an unclosed macro"),
    Kind("confluence", "Unknown macro", ('<ac:structured-macro ac:name="x-future-macro"><ac:parameter ac:name="p">'
         'v</ac:parameter><ac:rich-text-body><p>future macro body text</p></ac:rich-text-body>'
         '</ac:structured-macro>', None), text="future macro body text"),
    Kind("confluence", "Nested macros", (nested_storage_macros(200), None), text="innermost macro text"),
    Kind("confluence", "Empty body", ("", None), error="empty document"),
    Kind("confluence", "Control title", ("<p>control characters in the title</p>", "Ops\x07 Runbook\x1b\x00 v2"),
         text="control characters in the title", title=lambda t: t == "Ops Runbook v2"),
    Kind("confluence", "Ten MB page", ("<p>a ten megabyte page of words</p>" * (TEN_MB // 35 + 1), None),
         error="over the 5000000-byte limit"),
    # -- Notion pages (blocks) -------------------------------------------------------------------------------
    Kind("notion", "No blocks", ([], None), text="No blocks"),
    Kind("notion", "Unknown block", ([{**block("paragraph", "known text"), "type": "future_widget",
                                       "future_widget": {"x": 1}}, block("paragraph", "text after the unknown block")],
                                     None), text="text after the unknown block"),
    Kind("notion", "Nested blocks", (nested_blocks(50), None), text="nesting level 25"),
    Kind("notion", "Control title", ([block("paragraph", "notion control title body")], "Notion\x1b[0m\x07 title"),
         text="notion control title body", title=lambda t: t == "Notion [0m title"),
]
SOURCES = ("local", "s3", "confluence", "notion")


def good_text(kind: Kind) -> str:
    return f"Good version of {kind.name}: the handbook page that was indexed before."


def chunk_texts(store: LanceStore, source: str, partition: str) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for row in store.read("embeddings", partition_filter(source, partition), ["doc_id", "text"]).to_pylist():
        texts.setdefault(row["doc_id"], []).append(row["text"])
    return texts


def titles(store: LanceStore, source: str, partition: str) -> dict[str, str]:
    rows = store.read("embeddings", partition_filter(source, partition), ["doc_id", "title"]).to_pylist()
    return {row["doc_id"]: row["title"] for row in rows}


class Corpus:
    """The four sources, each with a partition holding every kind plus two steady good documents."""

    def __init__(self, root: Path, s3, confluence, notion) -> None:
        self.folder = root / "files" / "bad"
        self.folder.mkdir(parents=True)
        self.s3, self.confluence, self.notion = s3, confluence, notion
        self.bucket = "bad-input"
        s3.create_bucket(Bucket=self.bucket)
        confluence.add_space("BAD")
        self.database, [self.data_source] = notion.add_database("Bad input")
        self.doc_ids: dict[tuple[str, str], str] = {}  # (source, kind name) -> doc id

    def partition(self, source: str) -> str:
        return {"local": "bad", "s3": self.bucket, "confluence": "BAD", "notion": self.database}[source]

    def write_good(self) -> None:
        for kind in [*KINDS, *(Kind(s, f"steady {i}.md", b"") for s in SOURCES for i in (1, 2))]:
            text = good_text(kind)
            if kind.source == "local":
                (self.folder / kind.name).write_text(text, encoding="utf-8")
                self.doc_ids[(kind.source, kind.name)] = kind.name
            elif kind.source == "s3":
                self.s3.put_object(Bucket=self.bucket, Key=kind.name, Body=text.encode(), ContentType="text/plain")
                self.doc_ids[(kind.source, kind.name)] = kind.name
            elif kind.source == "confluence":
                page = self.confluence.add_page("BAD", kind.name, f"<p>{text}</p>")
                self.doc_ids[(kind.source, kind.name)] = page.id
            else:
                page_id = self.notion.add_row(self.data_source, kind.name, [block("paragraph", text)])
                self.doc_ids[(kind.source, kind.name)] = page_id

    def write_bad(self) -> None:
        self.confluence.advance(hours=1)
        stamp = self.notion.tick(5)
        for kind in KINDS:
            if kind.source == "local":
                (self.folder / kind.name).write_bytes(kind.bad)
            elif kind.source == "s3":
                self.s3.put_object(Bucket=self.bucket, Key=kind.name, Body=kind.bad,
                                   ContentType=kind.content_type or "binary/octet-stream")
            elif kind.source == "confluence":
                body, title = kind.bad
                self.confluence.edit_page(self.doc_ids[(kind.source, kind.name)], body=body, title=title)
            else:
                blocks, title = kind.bad
                page = self.notion.pages[self.doc_ids[(kind.source, kind.name)]]
                if title is not None:
                    page["properties"]["Title"]["title"] = [text_segment(title)]
                self.notion.set_blocks(page["id"], blocks)
                page["last_edited_time"] = stamp


@pytest.fixture
def corpus_env(clean_env, tmp_path, lancedb_uri):
    moto = MotoServer()
    try:
        with confluence_simulator() as confluence, notion_simulator() as notion:
            corpus = Corpus(tmp_path, moto.client(), confluence, notion)
            for name in list(os.environ):
                if name.startswith("AWS_"):
                    clean_env.delenv(name)
            settings = {
                "RAG_LANCEDB_URI": lancedb_uri, "RAG_LOCAL_ROOT": str(corpus.folder.parent),
                "S3_SYNC_BUCKET": corpus.bucket, "S3_ENDPOINT_URL": moto.url, "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS["aws_secret_access_key"],
                "CONFLUENCE_URL": confluence.url, "CONFLUENCE_USERNAME": confluence.username,
                "CONFLUENCE_API_TOKEN": confluence.token, "CONFLUENCE_SPACES": "BAD",
                "CONFLUENCE_RETRY_BACKOFF_SECONDS": "0.01",
                "NOTION_API_KEY": notion.token, "NOTION_BASE_URL": notion.base_url,
                "NOTION_DATABASE_IDS": corpus.database, "NOTION_REQUESTS_PER_SECOND": "2000",
            }
            for name, value in settings.items():
                clean_env.setenv(name, value)
            yield corpus
    finally:
        moto.close()


def sync_all(instance, corpus: Corpus) -> dict[str, dict]:
    """One run per source; every run must succeed, whatever its documents hold."""
    metadata = {}
    for source in SOURCES:
        started = time.monotonic()
        result = materialize_partition(instance, corpus.partition(source), source=source)
        assert result.success, f"the {source} run failed"
        metadata[source] = stage_metadata(result)
        stages = {stage: values["duration_s"] for stage, values in metadata[source].items()}
        print(f"{source} run: {time.monotonic() - started:.1f}s, stages {stages}")
    return metadata


def test_41_kinds_of_bad_input_fail_alone_or_index_and_nothing_indexed_is_lost(corpus_env, instance, lancedb_uri,
                                                                              tmp_path):
    corpus = corpus_env
    store = LanceStore(lancedb_uri)
    corpus.write_good()
    first = sync_all(instance, corpus)
    before = {source: chunk_texts(store, source, corpus.partition(source)) for source in SOURCES}
    for source in SOURCES:
        assert first[source]["markdown"]["documents_failed"] == 0
        assert len(before[source]) == sum(k.source == source for k in KINDS) + 2

    corpus.write_bad()
    second = sync_all(instance, corpus)

    failures = {}
    for row in store.read("failures", None, ["source", "doc_id", "stage", "error", "run_id"]).to_pylist():
        failures[(row["source"], row["doc_id"])] = row
    problems, errors_recorded, indexed_odd = [], 0, 0
    for kind in KINDS:
        source, partition = kind.source, corpus.partition(kind.source)
        doc_id = corpus.doc_ids[(source, kind.name)]
        texts = chunk_texts(store, source, partition).get(doc_id, [])
        failure = failures.get((source, doc_id))
        if kind.error:
            reported = "\n".join(str(second[source][stage].get("failures", "")) for stage in second[source])
            if failure is None or kind.error not in failure["error"] or doc_id not in failure["error"]:
                problems.append(f"{source} {kind.name}: expected a failure with {kind.error!r}, got {failure}")
            elif doc_id not in reported or kind.error not in reported:
                problems.append(f"{source} {kind.name}: the failure is missing from the run's metadata")
            elif texts != before[source][doc_id]:
                problems.append(f"{source} {kind.name}: the previously indexed chunks changed or were lost")
            else:
                errors_recorded += 1
        else:
            title = titles(store, source, partition).get(doc_id, "")
            if failure is not None:
                problems.append(f"{source} {kind.name}: should index but failed: {failure['error']}")
            elif not any(kind.text in text for text in texts):
                problems.append(f"{source} {kind.name}: indexed chunks lack {kind.text!r}")
            elif not no_controls(title) or (kind.title and not kind.title(title)):
                problems.append(f"{source} {kind.name}: bad title {title[:80]!r}")
            else:
                indexed_odd += 1

    lost = [(source, doc_id) for source in SOURCES for doc_id in before[source]
            if doc_id not in chunk_texts(store, source, corpus.partition(source))]
    steady = [(s, i) for s in SOURCES for i in (1, 2)
              if good_text(Kind(s, f"steady {i}.md", b"")) not in
              "".join(chunk_texts(store, s, corpus.partition(s))[corpus.doc_ids[(s, f"steady {i}.md")]])]

    # Ids with path separators stay inside the export folder.
    export = tmp_path / "deep" / "er" / "export"  # an id climbing out would still land under tmp_path
    for source in SOURCES:
        mirror_partition(store, export, source, corpus.partition(source))
    written = [p for p in tmp_path.rglob("*.md") if export not in p.parents and corpus.folder not in p.parents]

    expected_errors = sum(1 for k in KINDS if k.error)
    print(f"\nbad input: kinds tried {len(KINDS)}, errors recorded {errors_recorded} of {expected_errors} expected, "
          f"odd-but-valid indexed {indexed_odd}, lost documents {len(lost)}, crashed runs 0 of {2 * len(SOURCES)}, "
          f"problems {len(problems)}, files written outside the export {len(written)}")
    assert len(KINDS) >= 30
    assert problems == []
    assert lost == [] and steady == [] and written == []
    assert errors_recorded == expected_errors and indexed_odd == len(KINDS) - expected_errors
