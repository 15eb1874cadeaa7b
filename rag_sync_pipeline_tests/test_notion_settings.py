"""Configuring the Notion source: environment variables, the sources file, and where the key may live."""

import pytest

from rag_sync_pipeline.settings import ConfigurationError, load_settings
from rag_sync_pipeline.sources import PartitionError, build_source
from rag_sync_pipeline_tests.fakes.notion import notion_simulator

FIRST = "c37a2c66e3aa4a0da44773de3b80c253"
SECOND = "668d797c-76fa-4934-9b05-ad288df2d136"


def test_environment_configures_a_notion_source_with_dashed_ids_and_no_secret(clean_env):
    clean_env.setenv("NOTION_DATABASE_IDS", f"{FIRST}, https://www.notion.so/team/Specs-{SECOND.replace('-', '')}")
    clean_env.setenv("NOTION_API_KEY", "ntn_secret_value_123")
    clean_env.setenv("NOTION_INCLUDE_CHILD_PAGES", "true")
    clean_env.setenv("NOTION_MAX_DEPTH", "2")
    clean_env.setenv("NOTION_REQUESTS_PER_SECOND", "1.5")
    clean_env.setenv("NOTION_SYNC_INTERVAL_SECONDS", "120")
    config = load_settings().source("notion")
    assert config.type == "notion" and config.sensor_interval_seconds == 120
    assert config.options["database_ids"] == ["c37a2c66-e3aa-4a0d-a447-73de3b80c253", SECOND]
    assert config.options["include_child_pages"] is True and config.options["max_depth"] == 2
    assert config.options["requests_per_second"] == 1.5 and config.options["deletion_strategy"] == "every_sync"
    assert config.options["api_key_env"] == "NOTION_API_KEY" and "ntn_secret_value_123" not in str(config)


def test_defaults_pace_three_requests_a_second_and_list_every_sync(clean_env):
    clean_env.setenv("NOTION_DATABASE_IDS", FIRST)
    clean_env.setenv("NOTION_API_KEY", "ntn_key")
    config = load_settings().source("notion")
    source = build_source(config)
    try:
        assert source.partitions() == ["c37a2c66-e3aa-4a0d-a447-73de3b80c253"]
        assert source.client.api.min_interval == pytest.approx(1 / 3)
        assert source.deletion_strategy == "every_sync" and not source.include_child_pages and source.max_depth == 3
        assert str(source.client.api.client.base_url) == "https://api.notion.com"
        assert source.normalize_partition(FIRST) == "c37a2c66-e3aa-4a0d-a447-73de3b80c253"
    finally:
        source.close()


def test_no_database_ids_means_no_notion_source(clean_env):
    assert "notion" not in {c.type for c in load_settings().sources}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("NOTION_DATABASE_IDS", "Sample table", "NOTION_DATABASE_IDS: not a Notion id"),
    ("NOTION_DELETION_STRATEGY", "hourly", "NOTION_DELETION_STRATEGY must be one of"),
    ("NOTION_MAX_DEPTH", "deep", "NOTION_MAX_DEPTH must be a number"),
    ("NOTION_REQUESTS_PER_SECOND", "0", "NOTION_REQUESTS_PER_SECOND must be positive"),
])
def test_bad_settings_name_the_variable(clean_env, name, value, message):
    clean_env.setenv("NOTION_DATABASE_IDS", FIRST)
    clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        load_settings()


def test_sources_file_names_the_key_variable_and_a_missing_key_says_which(clean_env, tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - name: wiki\n    type: notion\n    database_ids: [{FIRST}]\n"
                       f"    api_key_env: WIKI_NOTION_KEY\n    deletion_strategy: weekly_reconciliation\n")
    clean_env.setenv("RAG_SOURCES_FILE", str(sources))
    config = load_settings().source("wiki")
    with pytest.raises(PartitionError, match="environment variable WIKI_NOTION_KEY"):
        build_source(config, environ={})
    with notion_simulator() as notion:
        database, _ = notion.add_database("Wiki")
        options = {**config.options, "database_ids": [database], "base_url": notion.base_url}
        source = build_source(type(config)(config.name, config.type, options),
                              environ={"WIKI_NOTION_KEY": notion.token})
        try:
            assert source.deletion_strategy == "weekly_reconciliation"
            assert source.list_documents(database, None).complete
        finally:
            source.close()


def test_sources_file_refuses_a_key_written_into_it(clean_env, tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - type: notion\n    database_ids: [{FIRST}]\n    api_key: ntn_oops\n")
    clean_env.setenv("RAG_SOURCES_FILE", str(sources))
    with pytest.raises(ConfigurationError, match="api_key_env"):
        load_settings()
