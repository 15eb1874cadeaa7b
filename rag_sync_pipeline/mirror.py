"""A Markdown mirror of the markdown stage, for people and tools that read files rather than a vector store.

One file per document at DIR/<source>/<partition>/<hierarchy>/<title>.md with YAML front matter. The mirror is
incremental: a manifest per partition remembers which file holds which document at which hash, so unchanged
files are not touched, deleted documents' files are removed, and a moved or renamed document's old file goes
away when its new one is written. Every name is made safe, and every path is checked to stay inside DIR.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rag_sync_pipeline.store import LanceStore, schemas
from rag_sync_pipeline.store.lance import partition_filter

MANIFEST = ".rag-sync-mirror.json"
UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
MAX_NAME = 120


@dataclass
class MirrorReport:
    written: int = 0
    unchanged: int = 0
    removed: int = 0


def safe_name(text: str, fallback: str = "untitled") -> str:
    """One path segment: no separators, no control characters, no `..`, not hidden, not too long."""
    name = unicodedata.normalize("NFC", text)
    name = UNSAFE.sub("-", name)
    name = re.sub(r"\.{2,}", ".", name).strip(" .-")
    name = re.sub(r"\s+", " ", name)[:MAX_NAME].strip()
    return name or fallback


def _short_id(doc_id: str) -> str:
    return safe_name(doc_id.replace("/", "-"))[-40:]


def _front_matter(row: dict[str, Any], source: str, partition: str) -> str:
    fields = {
        "title": row["title"], "url": row["url"] or None, "source": source, "partition": partition,
        "doc_id": row["doc_id"], "last_modified": row["last_modified"] or None,
        "path": row["path"] or None, "content_hash": row["doc_hash"],
    }
    return "---\n" + yaml.safe_dump({k: v for k, v in fields.items() if v is not None}, allow_unicode=True,
                                    sort_keys=False) + "---\n\n"


def _planned_paths(rows: list[dict[str, Any]], partition: str) -> dict[str, Path]:
    """Relative file path per document; a second document of the same title gets its id appended."""
    planned: dict[str, Path] = {}
    taken: set[str] = set()
    for row in sorted(rows, key=lambda r: r["doc_id"]):
        segments = [s.strip() for s in (row["path"] or "").split(" / ") if s.strip()]
        if segments and segments[0] == partition:
            segments = segments[1:]  # the partition is already the mirror's folder
        folder = Path(*[safe_name(s) for s in segments]) if segments else Path()
        stem = safe_name(row["title"] or Path(row["doc_id"]).stem, fallback=_short_id(row["doc_id"]))
        path = folder / f"{stem}.md"
        if str(path).lower() in taken:
            path = folder / f"{stem} ({_short_id(row['doc_id'])}).md"
        taken.add(str(path).lower())
        planned[row["doc_id"]] = path
    return planned


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"refusing to write outside the mirror: {path}")
    return resolved


def mirror_partition(store: LanceStore, directory: Path, source: str, partition: str) -> MirrorReport:
    root = directory.resolve()
    base = _inside(root, root / safe_name(source) / safe_name(partition))
    manifest_path = base / MANIFEST
    previous: dict[str, dict[str, str]] = {}
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text(encoding="utf-8"))

    columns = ["doc_id", "title", "url", "path", "last_modified", "doc_hash", "markdown"]
    rows = store.read(schemas.MARKDOWN_TABLE, partition_filter(source, partition), columns).to_pylist()
    planned = _planned_paths(rows, partition)
    report, manifest, stale = MirrorReport(), {}, []
    for row in rows:
        relative = planned[row["doc_id"]]
        target = _inside(root, base / relative)
        entry = {"path": relative.as_posix(), "hash": row["doc_hash"]}
        manifest[row["doc_id"]] = entry
        old = previous.get(row["doc_id"])
        if old == entry and target.is_file():
            report.unchanged += 1
            continue
        _write_atomically(target, _front_matter(row, source, partition) + row["markdown"])
        report.written += 1
        if old and old["path"] != entry["path"]:
            stale.append(old["path"])  # moved or renamed
    stale += [old["path"] for doc_id, old in previous.items() if doc_id not in manifest]  # deleted
    current = {entry["path"] for entry in manifest.values()}
    report.removed = sum(_remove(root, base, path) for path in stale if path not in current)
    if manifest or previous:
        _write_atomically(manifest_path, json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False))
    return report


def _remove(root: Path, base: Path, relative: str) -> int:
    """Remove a file the mirror wrote earlier, and the folders that leaves empty."""
    target = _inside(root, base / relative)
    if not target.is_file():
        return 0
    target.unlink()
    folder = target.parent
    while folder != base and folder.is_relative_to(base) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
    return 1
