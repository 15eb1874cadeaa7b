"""LanceDB: the tables, the atomic writes, state reads and search."""

from rag_sync_pipeline.store.lance import LanceStore, LedgerEntry, open_store

__all__ = ["LanceStore", "LedgerEntry", "open_store"]
