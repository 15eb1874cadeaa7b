from rag_sync_pipeline.identity import chunk_id, sha256_hex
from rag_sync_pipeline.store import LedgerEntry
from rag_sync_pipeline.sync.plan import batched, plan_stage


def test_chunk_ids_are_stable_and_keep_repeated_text_and_sources_apart():
    text = sha256_hex("Same paragraph.")
    assert chunk_id("local", "eng", "a.md", text, 0) == chunk_id("local", "eng", "a.md", text, 0)
    ids = {chunk_id("local", "eng", "a.md", text, 0), chunk_id("local", "eng", "a.md", text, 1),
           chunk_id("local", "eng", "b.md", text, 0), chunk_id("local", "hr", "a.md", text, 0),
           chunk_id("wiki", "eng", "a.md", text, 0)}
    assert len(ids) == 5


def test_hash_parts_are_separated():
    assert sha256_hex("ab", "c") != sha256_hex("a", "bc")


def test_plan_finds_new_changed_deleted_and_unchanged():
    ledger = {"same": LedgerEntry("v1", "h1"), "moved": LedgerEntry("v1", "h2"), "gone": LedgerEntry("v1", "h3")}
    plan = plan_stage({"same": "v1", "moved": "v2", "new": "v1"}, ledger, complete=True)
    assert plan.added == ["new"] and plan.changed == ["moved"] and plan.deleted == ["gone"]
    assert plan.unchanged == 1


def test_incomplete_listing_never_deletes_and_full_refresh_redoes_everything():
    ledger = {"a": LedgerEntry("v1", "h"), "b": LedgerEntry("v1", "h")}
    incremental = plan_stage({"a": "v1"}, ledger, complete=False)
    assert incremental.deleted == [] and incremental.unchanged == 1
    refresh = plan_stage({"a": "v1", "b": "v1"}, ledger, complete=True, full_refresh=True)
    assert sorted(refresh.changed) == ["a", "b"]


def test_batched():
    assert list(batched(["a", "b", "c"], 2)) == [["a", "b"], ["c"]]


def test_plan_redoes_documents_made_with_other_settings():
    ledger = {"a": LedgerEntry("v1", "old-settings"), "b": LedgerEntry("v1", "v1+new"), "c": LedgerEntry("v1", None)}
    plan = plan_stage({"a": "v1", "b": "v1", "c": "v1"}, ledger, complete=True, produces=lambda v: f"{v}+new")
    assert plan.changed == ["a"] and plan.unchanged == 2
