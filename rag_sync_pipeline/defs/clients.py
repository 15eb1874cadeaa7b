"""Ready API clients for the sources that take one from Dagster's integrations.

Sources know nothing of Dagster, so a client that comes from a Dagster resource (the boto3 client of
dagster-aws's S3Resource, for instance) is built here and handed to the source. Register a factory per source
type in CLIENT_FACTORIES; sources without one build their own client from their options.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from rag_sync_pipeline.settings import ConfigurationError, SourceConfig
from rag_sync_pipeline.sources import SOURCE_TYPES, Source, build_source
from rag_sync_pipeline.sources.http import check_url_security, insecure_http_allowed


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
    if options.get("endpoint_url"):
        check_url_security(str(options["endpoint_url"]), allow_insecure_http=insecure_http_allowed(options, environ),
                           setting=f"s3 source {config.name!r} endpoint_url")
    settings = {"region_name": options.get("region") or None, "endpoint_url": options.get("endpoint_url") or None,
                "profile_name": options.get("profile") or None, **secrets}
    # boto3's own chain reads these; a change to them (rotated keys) must build a new client.
    chain = {name: value for name, value in environ.items() if name.startswith("AWS_")}
    return _reused(json.dumps([settings, chain], sort_keys=True), lambda: _build_s3_client(settings))


def _build_s3_client(settings: dict[str, Any]) -> Any:
    from dagster_aws.s3 import S3Resource  # here, not above: `rag-sync sync` of other sources skips Dagster

    return S3Resource(**settings).get_client()


# Building a boto3 client costs ~170 ms (botocore loads its service models), a good part of a sensor tick: a
# process reuses one per configuration for a while. The key is a digest of all it was built from.
CLIENT_REUSE_SECONDS = 900
_clients: dict[str, tuple[float, Any]] = {}
_clients_lock = threading.Lock()


def _reused(key: str, build: Callable[[], Any]) -> Any:
    digest = hashlib.sha256(key.encode()).hexdigest()
    with _clients_lock:
        built_at, client = _clients.get(digest, (0.0, None))
        if client is None or time.monotonic() - built_at > CLIENT_REUSE_SECONDS:
            client = build()
            _clients[digest] = (time.monotonic(), client)
        return client


CLIENT_FACTORIES: dict[str, Callable[[SourceConfig, Mapping[str, str]], Any]] = {"s3": s3_client}


def secret_variables(config: SourceConfig) -> list[str]:
    """The environment variables that hold this source's credentials (the `*_env` options, or their defaults)."""
    defaults = SOURCE_TYPES[config.type].secret_options
    names = (str(config.options.get(option) or default) for option, default in defaults.items())
    return sorted({name for name in names if name})


def source_for(config: SourceConfig, secrets: Mapping[str, str] | None = None) -> Source:
    """The source for one run or tick, with its client.

    `secrets`: the credentials as the source's Dagster resource resolved them (EnvVars, read when the run or
    tick started); the source then sees no other copy of those variables. Without it (the `rag-sync` commands,
    which run outside Dagster's resources) they are read from the environment now.
    """
    environ: Mapping[str, str] = os.environ
    if secrets is not None:
        own = set(secret_variables(config))
        environ = {name: value for name, value in os.environ.items() if name not in own}
        environ |= {name: value for name, value in secrets.items() if name in own}
    factory = CLIENT_FACTORIES.get(config.type)
    client = factory(config, environ) if factory else None
    return build_source(config, environ, client=client)
