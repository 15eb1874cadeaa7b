import os

import pytest

from rag_sync_pipeline.sources import DocumentError, PartitionError
from rag_sync_pipeline.sources.local import LocalFolderSource


def test_partitions_are_top_level_folders(corpus):
    source = LocalFolderSource("local", corpus)
    assert source.partitions() == ["eng", "hr"]


def test_listing_is_complete_with_size_mtime_versions_and_nested_paths(corpus):
    listing = LocalFolderSource("local", corpus).list_documents("eng", None)
    assert listing.complete
    assert sorted(r.doc_id for r in listing.refs) == ["adr.html", "notes.txt", "runbooks/database.md"]
    size, mtime = next(r.version for r in listing.refs if r.doc_id == "notes.txt").split(":")
    assert int(size) == (corpus / "eng" / "notes.txt").stat().st_size and int(mtime) > 0


def test_probe_moves_on_edit_add_and_delete_only(corpus):
    source = LocalFolderSource("local", corpus)
    mark = source.probe("eng", None)
    assert source.probe("eng", mark) == mark
    notes = corpus / "eng" / "notes.txt"
    notes.write_text("changed\n")
    edited = source.probe("eng", mark)
    assert edited != mark
    notes.unlink()
    assert source.probe("eng", edited) not in {mark, edited}
    assert source.probe("hr", None) == source.probe("hr", None)


def test_fetch_returns_content_type_path_and_metadata(corpus):
    source = LocalFolderSource("local", corpus)
    ref = next(r for r in source.list_documents("eng", None).refs if r.doc_id == "runbooks/database.md")
    document = source.fetch("eng", ref)
    assert document.content_type == "text/markdown"
    assert document.path == ["eng", "runbooks"]
    assert document.url.startswith("file://") and document.last_modified.endswith("+00:00")
    assert document.content.startswith(b"# Database runbook")


def test_missing_partition_and_vanished_file_give_clear_errors(corpus):
    source = LocalFolderSource("local", corpus)
    with pytest.raises(PartitionError, match="partition folder 'nope' not found"):
        source.list_documents("nope", None)
    with pytest.raises(PartitionError):
        source.list_documents("../etc", None)
    ref = source.list_documents("hr", None).refs[0]
    os.remove(corpus / "hr" / ref.doc_id)
    with pytest.raises(DocumentError, match=f"local file hr/{ref.doc_id}: deleted while syncing"):
        source.fetch("hr", ref)


def test_oversized_file_is_a_document_error(corpus):
    source = LocalFolderSource("local", corpus, max_file_bytes=10)
    ref = next(r for r in source.list_documents("hr", None).refs if r.doc_id == "leave.txt")
    with pytest.raises(DocumentError, match="over the 10-byte limit"):
        source.fetch("hr", ref)
