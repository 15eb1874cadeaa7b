"""Ready API clients for the sources that take one from Dagster's integrations.

Sources know nothing of Dagster, so a client that comes from a Dagster resource (the boto3 client of
dagster-aws's S3Resource, for instance) is built here and handed to the source. Register a factory per source
type in CLIENT_FACTORIES; sources without one build their own client from their options.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from rag_sync_pipeline.settings import SourceConfig
from rag_sync_pipeline.sources import Source, build_source

CLIENT_FACTORIES: dict[str, Callable[[SourceConfig, Mapping[str, str]], Any]] = {}


def source_for(config: SourceConfig) -> Source:
    """The source for one run or tick, with its client, secrets read from the environment now."""
    factory = CLIENT_FACTORIES.get(config.type)
    client = factory(config, os.environ) if factory else None
    return build_source(config, client=client)
