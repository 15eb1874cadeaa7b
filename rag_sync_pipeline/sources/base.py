"""The protocol every source implements, shaped by the three first sources.

Four cheap questions (see DESIGN.md):
- `partitions()`: the configured spaces / buckets / databases;
- `probe(partition, committed_mark)`: the source's current high-water mark, in one or two calls (a CQL query
  with `lastmodified`, an S3 listing's (key, ETag) set, a Notion query on `last_edited_time`);
- `list_documents(partition, since_mark)`: document ids with opaque version tokens: either every live
  document (`complete=True`, so missing ids were deleted) or those whose version may have moved since the mark
  (incremental APIs overlap their window; the version tokens dedupe what was already indexed);
- `fetch(partition, ref)`: one document with its metadata.
Sources know nothing of Dagster or LanceDB. They raise `DocumentError` for one bad document (recorded, the run
goes on) and `PartitionError` when the whole partition is unusable (the run fails with that message).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


class SourceError(Exception):
    """Base of the errors a source raises."""


class PartitionError(SourceError):
    """The partition cannot be synced at all: missing, no permission, credentials refused."""


class DocumentError(SourceError):
    """One document cannot be fetched or converted; the message names the document and the cause.

    `permanent`: retrying will not help until the document itself changes (gone, unshared, too large, of an
    unsupported type). Other failures (the service failing past every retry) may heal on their own.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class DocumentRef:
    """A document as a listing names it: its id and an opaque version token (ETag, version, timestamp)."""

    doc_id: str
    version: str


@dataclass(frozen=True)
class Listing:
    refs: list[DocumentRef]
    complete: bool
    """True when `refs` holds every live document, so any other indexed document was deleted."""
    mark: str
    """The high-water mark this listing covers; committed once everything in it is indexed."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Objects the source saw but left out of `refs` and never fetches (folders, empty, too large, unsupported
    type), counted per reason, so a run can say what it did not index and why."""


@dataclass
class RawDocument:
    doc_id: str
    version: str
    content: bytes
    content_type: str
    title: str = ""
    url: str = ""
    path: list[str] = field(default_factory=list)
    """The document's place in the source's hierarchy (folders, ancestor pages), excluding itself."""
    last_modified: str = ""
    """ISO 8601, UTC."""
    metadata: dict[str, Any] = field(default_factory=dict)


DELETION_STRATEGIES = ("every_sync", "weekly_reconciliation", "on_demand")


class Source(ABC):
    type: ClassVar[str]
    external: ClassVar[bool] = True
    """External sources' sensors run by default only with EXTERNAL_SYNC_ENABLED=true."""
    default_interval_seconds: ClassVar[int] = 300
    # Options that name the environment variables holding credentials, with the default variable of each.
    secret_options: ClassVar[dict[str, str]] = {}

    def __init__(self, name: str, deletion_strategy: str = "every_sync") -> None:
        if deletion_strategy not in DELETION_STRATEGIES:
            raise ValueError(f"source {name!r}: deletion_strategy must be one of {', '.join(DELETION_STRATEGIES)}, "
                             f"got {deletion_strategy!r}")
        self.name = name
        self.api_calls = 0
        self.deletion_strategy = deletion_strategy
        """How often a complete listing is taken to find deletions, for sources whose cheap listing is
        incremental. Sources whose listing is always complete (local, S3) find deletions on every sync."""

    @classmethod
    @abstractmethod
    def options_from_environment(cls, environ: Mapping[str, str]) -> dict[str, Any] | None:
        """Options for a source configured by environment variables alone, or None if it is not."""

    @classmethod
    @abstractmethod
    def from_options(cls, name: str, options: Mapping[str, Any], environ: Mapping[str, str],
                     client: Any = None) -> Source:
        """Build a ready source; secrets are read from `environ` under the names the options give.

        `client` is a ready API client built by defs/ (e.g. the boto3 client of dagster-aws's S3Resource);
        sources that build their own (httpx) clients ignore it.
        """

    @abstractmethod
    def partitions(self) -> list[str]: ...

    @abstractmethod
    def probe(self, partition: str, committed_mark: str | None) -> str: ...

    @abstractmethod
    def list_documents(self, partition: str, since_mark: str | None) -> Listing: ...

    @abstractmethod
    def fetch(self, partition: str, ref: DocumentRef) -> RawDocument: ...

    def check_partition(self, partition: str) -> None:
        """Raise if the partition cannot be read (for `rag-sync check`); a probe proves it by default.

        Sources whose probe answers an empty result for a missing partition (a CQL search of an unknown space)
        override this with a lookup that fails for it."""
        self.probe(partition, None)

    def normalize_partition(self, partition: str) -> str:
        """The canonical key for a partition as a person typed it (an undashed Notion id, for instance)."""
        return partition

    def describe(self, partition: str, doc_id: str) -> str:
        """How error messages name a document."""
        return f"{self.type} document {doc_id!r} in {partition}"

    def close(self) -> None:  # noqa: B027 - optional hook: sources without clients have nothing to close
        """Release clients and connections."""
