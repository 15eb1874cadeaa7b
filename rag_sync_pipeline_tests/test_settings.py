from pathlib import Path

import pytest

from rag_sync_pipeline.settings import SAMPLE_CORPUS_DIR, ConfigurationError, load_settings


def test_embedded_default_uses_sample_corpus_local_lancedb_and_bundled_model(clean_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert [s.name for s in settings.sources] == ["local"]
    assert settings.source("local").options["root"] == str(SAMPLE_CORPUS_DIR)
    assert settings.lancedb_uri == str(tmp_path / "data" / "lancedb")
    assert Path(settings.embedding_model, "model.safetensors").is_file()
    assert settings.embedding_device == "auto"
    assert settings.external_sync_enabled is False


def test_environment_overrides(clean_env, tmp_path):
    clean_env.setenv("RAG_LOCAL_ROOT", str(tmp_path))
    clean_env.setenv("RAG_LANCEDB_URI", "s3://bucket/index")
    clean_env.setenv("RAG_DOCUMENTS_PER_COMMIT", "50")
    clean_env.setenv("RAG_MAX_MARKDOWN_BYTES", "1000000")
    clean_env.setenv("LOCAL_SYNC_INTERVAL_SECONDS", "7")
    clean_env.setenv("EXTERNAL_SYNC_ENABLED", "true")
    settings = load_settings()
    assert settings.source("local").options["root"] == str(tmp_path)
    assert settings.source("local").sensor_interval_seconds == 7
    assert settings.lancedb_uri == "s3://bucket/index"
    assert settings.documents_per_commit == 50
    assert settings.max_markdown_bytes == 1_000_000
    assert settings.external_sync_enabled is True


def test_sources_file_defines_several_named_instances_with_secrets_from_environment(clean_env, tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "sources:\n"
        f"  - name: handbook\n    type: local\n    root: {tmp_path}\n    sensor_interval_seconds: 120\n"
        f"  - name: wiki_export\n    type: local\n    root: {tmp_path}\n    token_env: WIKI_TOKEN\n",
        encoding="utf-8")
    clean_env.setenv("RAG_SOURCES_FILE", str(sources))
    clean_env.setenv("RAG_LOCAL_ENABLED", "false")
    settings = load_settings()
    assert [s.name for s in settings.sources] == ["handbook", "wiki_export"]
    assert settings.source("handbook").sensor_interval_seconds == 120
    # The file names the variable; the value itself is never part of the configuration.
    assert settings.source("wiki_export").options["token_env"] == "WIKI_TOKEN"


@pytest.mark.parametrize("content, message", [
    ("sources:\n  - name: a\n    type: local\n    root: /x\n    api_token: abc\n", "name the environment variable"),
    ("sources:\n  - name: a\n    type: gopher\n", "unknown type 'gopher'"),
    ("sources:\n  - name: Bad-Name\n    type: local\n    root: /x\n", "lowercase letters"),
    ("sources:\n  - {name: a, type: local, root: /x}\n  - {name: a, type: local, root: /y}\n", "configured twice"),
    ("just a string", "top-level 'sources:' list"),
])
def test_bad_sources_file_gives_a_clear_error(clean_env, tmp_path, content, message):
    sources = tmp_path / "sources.yaml"
    sources.write_text(content, encoding="utf-8")
    clean_env.setenv("RAG_SOURCES_FILE", str(sources))
    with pytest.raises(ConfigurationError, match=message):
        load_settings()


def test_bad_number_names_the_variable(clean_env):
    clean_env.setenv("RAG_EMBEDDING_BATCH_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="RAG_EMBEDDING_BATCH_SIZE"):
        load_settings()


def test_configuration_is_not_read_at_import_time(clean_env, tmp_path):
    import importlib

    import rag_sync_pipeline.definitions as definitions

    clean_env.setenv("RAG_SOURCES_FILE", str(tmp_path / "missing.yaml"))
    importlib.reload(definitions)  # importing must not touch the broken configuration
    with pytest.raises(ConfigurationError, match="missing.yaml"):
        definitions.load_settings()


def test_pool_and_freshness_bound_per_source(clean_env, tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - {{name: wiki, type: local, root: {tmp_path}, pool: acme_wiki_api, "
                       f"freshness_hours: 2}}\n  - {{name: notes, type: local, root: {tmp_path}}}\n")
    clean_env.setenv("RAG_SOURCES_FILE", str(sources))
    clean_env.setenv("LOCAL_FRESHNESS_MINUTES", "90")
    settings = load_settings()
    wiki, notes, local = settings.source("wiki"), settings.source("notes"), settings.source("local")
    assert (wiki.api_pool, wiki.freshness_minutes) == ("acme_wiki_api", 120)
    assert "pool" not in wiki.options and "freshness_hours" not in wiki.options
    assert (notes.api_pool, notes.freshness_minutes) == ("local_api", 24 * 60)
    assert (local.api_pool, local.freshness_minutes) == ("local_api", 90)
def test_embedding_backend_and_fetch_concurrency(clean_env):
    assert (load_settings().embedding_backend, load_settings().fetch_concurrency) == ("torch", 8)
    clean_env.setenv("RAG_EMBEDDING_BACKEND", "ONNX-int8")
    clean_env.setenv("RAG_FETCH_CONCURRENCY", "3")
    assert (load_settings().embedding_backend, load_settings().fetch_concurrency) == ("onnx-int8", 3)
    clean_env.setenv("RAG_EMBEDDING_BACKEND", "tensorflow")
    with pytest.raises(ConfigurationError, match="RAG_EMBEDDING_BACKEND"):
        load_settings()
