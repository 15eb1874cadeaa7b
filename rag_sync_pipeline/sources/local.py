"""The `local` source: a folder whose top-level folders are the partitions.

Change token: size + mtime from one directory walk, confirmed by content hash in the raw stage (a touched but
unchanged file moves the token, not the document's hash, so nothing downstream is redone). The listing is
always complete, so deletions are found on every sync.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag_sync_pipeline.identity import sha256_hex
from rag_sync_pipeline.sources.base import DocumentError, DocumentRef, Listing, PartitionError, RawDocument, Source

DEFAULT_EXTENSIONS = (".md", ".markdown", ".html", ".htm", ".txt")
CONTENT_TYPES = {".md": "text/markdown", ".markdown": "text/markdown", ".html": "text/html",
                 ".htm": "text/html", ".txt": "text/plain"}


class LocalFolderSource(Source):
    type = "local"
    external = False
    default_interval_seconds = 30

    def __init__(self, name: str, root: Path, extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
                 max_file_bytes: int = 20_000_000) -> None:
        super().__init__(name)
        self.root = root
        self.extensions = tuple(e.lower() for e in extensions)
        self.max_file_bytes = max_file_bytes

    @classmethod
    def options_from_environment(cls, environ: Mapping[str, str]) -> dict[str, Any] | None:
        if environ.get("RAG_LOCAL_ENABLED", "true").strip().lower() in {"0", "false", "no", "off"}:
            return None
        from rag_sync_pipeline.settings import SAMPLE_CORPUS_DIR

        return {"root": environ.get("RAG_LOCAL_ROOT", "").strip() or str(SAMPLE_CORPUS_DIR)}

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], environ: Mapping[str, str],
                     client: Any = None) -> LocalFolderSource:
        extensions = options.get("extensions") or DEFAULT_EXTENSIONS
        return cls(name, Path(str(options["root"])).expanduser().resolve(),
                   extensions=tuple(extensions), max_file_bytes=int(options.get("max_file_bytes", 20_000_000)))

    def partitions(self) -> list[str]:
        if not self.root.is_dir():
            raise PartitionError(f"local source {self.name!r}: root folder {self.root} does not exist")
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _partition_dir(self, partition: str) -> Path:
        folder = (self.root / partition).resolve()
        if folder.parent != self.root or not folder.is_dir():
            raise PartitionError(f"local source {self.name!r}: partition folder {partition!r} not found in {self.root}")
        return folder

    def _walk(self, partition: str) -> list[tuple[str, os.stat_result]]:
        folder = self._partition_dir(partition)
        found = []
        for directory, subdirs, files in os.walk(folder):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for file_name in sorted(files):
                if file_name.startswith(".") or not file_name.lower().endswith(self.extensions):
                    continue
                path = Path(directory) / file_name
                found.append((path.relative_to(folder).as_posix(), path.stat()))
        return found

    @staticmethod
    def _version(stat: os.stat_result) -> str:
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def list_documents(self, partition: str, since_mark: str | None) -> Listing:
        refs = [DocumentRef(doc_id, self._version(stat)) for doc_id, stat in self._walk(partition)]
        mark = sha256_hex(*(f"{r.doc_id}={r.version}" for r in refs))
        return Listing(refs=refs, complete=True, mark=mark)

    def probe(self, partition: str, committed_mark: str | None) -> str:
        return self.list_documents(partition, committed_mark).mark

    def fetch(self, partition: str, ref: DocumentRef) -> RawDocument:
        folder = self._partition_dir(partition)
        path = Path(os.path.normpath(folder / ref.doc_id))
        if not path.is_relative_to(folder) or path == folder:  # a made-up id such as ../../etc/passwd
            raise DocumentError(f"{self.describe(partition, ref.doc_id)}: the id leads outside the partition folder",
                                permanent=True)
        try:
            stat = path.stat()
            if stat.st_size > self.max_file_bytes:
                raise DocumentError(f"{self.describe(partition, ref.doc_id)}: {stat.st_size} bytes is over the "
                                    f"{self.max_file_bytes}-byte limit", permanent=True)
            content = path.read_bytes()
        except FileNotFoundError:
            raise DocumentError(f"{self.describe(partition, ref.doc_id)}: deleted while syncing",
                                permanent=True) from None
        except OSError as error:
            raise DocumentError(f"{self.describe(partition, ref.doc_id)}: cannot be read: {error}") from None
        suffix = path.suffix.lower()
        content_type = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC).isoformat()
        return RawDocument(
            doc_id=ref.doc_id,
            version=self._version(stat),
            content=content,
            content_type=content_type,
            title="",  # taken from the document itself in the markdown stage
            url=path.as_uri(),
            path=[partition, *Path(ref.doc_id).parent.parts],
            last_modified=modified,
            metadata={"file_name": path.name, "size": stat.st_size},
        )

    def describe(self, partition: str, doc_id: str) -> str:
        return f"local file {partition}/{doc_id}"
