"""Can each configured source be used? Reached with the configured credentials, without syncing anything.

Every source answers through its own protocol: listing its partitions proves the host is reachable and the
credentials are accepted; a probe of each partition proves it exists and is readable. Errors become plain
words an operator can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_sync_pipeline.sources.base import PartitionError, Source, SourceError


@dataclass(frozen=True)
class PartitionHealth:
    partition: str
    ok: bool
    detail: str


@dataclass
class SourceHealth:
    source: str
    ok: bool
    detail: str
    partitions: list[PartitionHealth] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.ok and all(p.ok for p in self.partitions)


def _root_cause(error: BaseException) -> BaseException:
    """The API error a source's own error was raised from (sources re-raise with the partition's name)."""
    from rag_sync_pipeline.sources.http import ApiError

    seen = error
    while not isinstance(seen, ApiError) and (seen.__cause__ or seen.__context__) is not None:
        seen = seen.__cause__ or seen.__context__
    return seen if isinstance(seen, ApiError) else error


def explain(error: Exception) -> str:
    """What went wrong, in the words an operator needs, followed by the source's own message."""
    from rag_sync_pipeline.sources.http import ApiError, AuthError, NotFoundError

    cause = _root_cause(error)
    if isinstance(cause, AuthError):
        what = "the credential was refused" if cause.status == 401 else "the credential lacks permission"
        return f"{what}: {error}"
    if isinstance(cause, NotFoundError):
        return f"not found, or not shared with this credential: {error}"
    if isinstance(cause, ApiError) and cause.status is None:
        return f"unreachable: {error}"
    if isinstance(error, PartitionError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def check_source(source: Source, partitions: list[str] | None = None) -> SourceHealth:
    """Check the source and each partition (the configured ones, or `partitions`)."""
    try:
        available = source.partitions()
    except (SourceError, OSError) as error:
        return SourceHealth(source.name, False, explain(error))
    health = SourceHealth(source.name, True, f"reachable, {len(available)} partition(s) configured")
    for partition in partitions or available:
        try:
            source.check_partition(partition)
        except (SourceError, OSError) as error:
            health.partitions.append(PartitionHealth(partition, False, explain(error)))
        else:
            health.partitions.append(PartitionHealth(partition, True, "readable"))
    return health
