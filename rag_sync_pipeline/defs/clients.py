"""Ready API clients for the sources that take one from Dagster's integrations.

Sources know nothing of Dagster, so a client that comes from a Dagster resource (the boto3 client of
dagster-aws's S3Resource, for instance) is built here and handed to the source. Register a factory per source
type in CLIENT_FACTORIES; sources without one build their own client from their options.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from dagster_aws.s3 import S3Resource

from rag_sync_pipeline.settings import ConfigurationError, SourceConfig
from rag_sync_pipeline.sources import Source, build_source


def s3_client(config: SourceConfig, environ: Mapping[str, str]) -> Any:
    """The boto3 S3 client of dagster-aws's S3Resource, for the `s3` source.

    Region and endpoint (S3-compatible stores: MinIO, Ceph, R2) come from the options. Credentials come from
    boto3's own chain (environment, profile, instance or pod role), unless the options name the environment
    variables that hold them (`access_key_id_env`, `secret_access_key_env`, `session_token_env`), which lets
    two instances in a sources file use different accounts. Either way they are read now, for this run or
    tick, and never reach configuration, metadata or logs.
    """
    options = config.options
    secrets: dict[str, str] = {}
    for option, field in (("access_key_id_env", "aws_access_key_id"),
                          ("secret_access_key_env", "aws_secret_access_key"),
                          ("session_token_env", "aws_session_token")):
        variable = str(options.get(option) or "")
        if variable:
            if not environ.get(variable):
                raise ConfigurationError(f"s3 source {config.name!r}: {option} names {variable}, which is not set")
            secrets[field] = environ[variable]
    resource = S3Resource(region_name=options.get("region") or None, endpoint_url=options.get("endpoint_url") or None,
                          profile_name=options.get("profile") or None, **secrets)
    return resource.get_client()


CLIENT_FACTORIES: dict[str, Callable[[SourceConfig, Mapping[str, str]], Any]] = {"s3": s3_client}


def source_for(config: SourceConfig) -> Source:
    """The source for one run or tick, with its client, secrets read from the environment now."""
    factory = CLIENT_FACTORIES.get(config.type)
    client = factory(config, os.environ) if factory else None
    return build_source(config, client=client)
