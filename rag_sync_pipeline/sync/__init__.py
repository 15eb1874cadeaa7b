"""The four stages, each reconciling its table against its upstream. Knows nothing of Dagster."""

from rag_sync_pipeline.sync.report import StageReport
from rag_sync_pipeline.sync.stages import (
    STAGES,
    StageRun,
    sync_chunks,
    sync_embeddings,
    sync_markdown,
    sync_raw,
)

__all__ = ["STAGES", "StageReport", "StageRun", "sync_chunks", "sync_embeddings", "sync_markdown", "sync_raw"]
