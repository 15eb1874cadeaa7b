"""The Dagster UI in a real browser: Debian's Chromium, headless, driven by Playwright, against a real `dagster dev`.

Two sources are configured (the `local` source and a second local instance, `handbook`, from a sources file),
each over a folder that is empty when Dagster starts, so the sensors' first ticks find nothing; the test then
stops both sensors and creates the partitions, so the only run is the one launched from the UI:

1. each source's lineage page shows raw_documents -> markdown -> chunks -> embeddings, left to right;
2. *Materialize all* -> Custom -> partition `hr` -> *Launch 1 run*: the run succeeds;
3. the embeddings asset page shows the run's metadata (chunks embedded, documents) for partition `hr`.

Screenshots of every step are saved in test-artifacts/ui_browser/ (and named in any failure message).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from rag_sync_pipeline_tests.e2e_runs import job_runs, run_errors
from rag_sync_pipeline_tests.e2e_support import REPO_ROOT, DagsterDev, clean_environment, graphql

pytestmark = pytest.mark.timeout(900)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui_browser"
LOCATION = "rag_sync_pipeline"
STAGES = ("raw_documents", "markdown", "chunks", "embeddings")
SOURCES = ("local", "handbook")
RUN_TIMEOUT_S = 300
UI_TIMEOUT_MS = 30_000

SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { id sensorState { id status } }
  }
}
"""
STOP_SENSOR = """
mutation Stop($id: String) {
  stopSensor(id: $id) { __typename ... on StopSensorMutationResult { instigationState { status } } }
}
"""
ADD_PARTITION = """
mutation Add($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) { __typename }
}
"""


@dataclass
class Ui:
    dev: DagsterDev
    page: Page
    corpora: dict[str, Path]
    repository: str

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def fail(self, message: str, name: str = "failure") -> None:
        path = self.shot(name)
        raise AssertionError(f"{message}\nscreenshot: {path}\n{self.dev.describe(40)}")


def launched_runs(dev) -> list[dict]:
    """Runs launched from the page: a schedule's run (check_freshness every 15 minutes) may start meanwhile."""
    return [r for r in job_runs(dev) if "dagster/schedule_name" not in r["tags"]]


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[Ui]:
    base = tmp_path_factory.mktemp("ui_browser")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    corpora = {name: base / f"corpus_{name}" for name in SOURCES}
    for folder in corpora.values():
        folder.mkdir()
    sources_file = base / "sources.yaml"
    sources_file.write_text(f"sources:\n  - name: handbook\n    type: local\n    root: {corpora['handbook']}\n")
    env = clean_environment(RAG_LOCAL_ROOT=str(corpora["local"]), RAG_SOURCES_FILE=str(sources_file),
                            RAG_LANCEDB_URI=str(base / "lancedb"), DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1",
                            TOKENIZERS_PARALLELISM="false", LOCAL_SYNC_INTERVAL_SECONDS="5")
    dev = DagsterDev(env, base / "dagster_dev.log")
    dev.start()
    try:
        dev.wait_until_ready(timeout_s=180)
        repository = _repository(dev)
        _stop_sensors(dev, repository)
        _create_partitions(dev, repository, corpora)
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(base / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(UI_TIMEOUT_MS)
            try:
                yield Ui(dev=dev, page=context.new_page(), corpora=corpora, repository=repository)
            finally:
                context.close()
    finally:
        dev.stop()


def _repository(dev: DagsterDev) -> str:
    query = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
    nodes = graphql(dev.url, query)["repositoriesOrError"]["nodes"]
    return next(n["name"] for n in nodes if n["location"]["name"] == LOCATION)


def _stop_sensors(dev: DagsterDev, repository: str) -> None:
    """The sensors would sync the partitions on their own; this test's only run comes from the UI."""
    for source in SOURCES:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": repository,
                    "sensorName": f"{source}_sync_sensor"}
        sensor = graphql(dev.url, SENSOR_QUERY, {"selector": selector})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        stopped = graphql(dev.url, STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
        assert stopped["__typename"] == "StopSensorMutationResult", stopped
        assert stopped["instigationState"]["status"] == "STOPPED", stopped


def _create_partitions(dev: DagsterDev, repository: str, corpora: dict[str, Path]) -> None:
    for source, root in corpora.items():
        for partition, text in (("eng", "Deploys freeze on Fridays after 14:00 CET."),
                                ("hr", "Full-time employees get 28 days of paid annual leave.")):
            (root / partition).mkdir()
            (root / partition / "policy.txt").write_text(f"{text}\n", encoding="utf-8")
            added = graphql(dev.url, ADD_PARTITION, {
                "selector": {"repositoryLocationName": LOCATION, "repositoryName": repository},
                "name": f"{source}_partitions", "key": partition})["addDynamicPartition"]
            assert added["__typename"] == "AddDynamicPartitionSuccess", added


def _dismiss_welcome(ui: Ui) -> None:
    """`dagster dev` greets a new browser profile with a newsletter dialog."""
    skip = ui.page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=10_000)
    except Exception:  # noqa: BLE001 - no dialog this time
        return
    skip.click()


def test_lineage_graph_shows_each_sources_four_stage_chain(ui):
    for source in SOURCES:
        ui.page.goto(f"{ui.dev.url}/locations/{LOCATION}/asset-groups/{source}")
        _dismiss_welcome(ui)
        boxes = {}
        for stage in STAGES:
            node = ui.page.locator(f'a[href^="/assets/{source}/{stage}"]').first
            try:
                node.wait_for(state="visible")
            except Exception:  # noqa: BLE001
                ui.fail(f"the lineage of {source} does not show {stage}", f"lineage_{source}_missing")
            boxes[stage] = ui.page.get_by_text(stage, exact=True).first.bounding_box()
        ui.page.wait_for_timeout(1500)  # edges animate in
        shot = ui.shot(f"01_lineage_{source}")
        xs = [boxes[stage]["x"] for stage in STAGES]
        assert xs == sorted(xs) and len(set(xs)) == 4, f"{source}: stages not laid out as a chain {boxes}; {shot}"
        ys = [boxes[stage]["y"] for stage in STAGES]
        assert max(ys) - min(ys) < 20, f"{source}: stages not on one row {boxes}; {shot}"

    # The edges the graph draws are the dependencies the webserver serves.
    nodes = graphql(ui.dev.url, "{ assetNodes { assetKey { path } dependencyKeys { path } } }")["assetNodes"]
    upstream = {tuple(n["assetKey"]["path"]): [tuple(d["path"]) for d in n["dependencyKeys"]] for n in nodes}
    for source in SOURCES:
        for before, after in zip(STAGES, STAGES[1:], strict=False):
            assert upstream[(source, after)] == [(source, before)], upstream


def test_materialize_one_partition_from_the_dialog(ui):
    page = ui.page
    page.goto(f"{ui.dev.url}/locations/{LOCATION}/asset-groups/local")
    _dismiss_welcome(ui)
    page.get_by_role("button", name="Materialize all").click()
    dialog_title = page.get_by_text("Launch runs to materialize 4 assets")
    try:
        dialog_title.wait_for(state="visible")
        page.get_by_text("Select a partition or create one").click()
        page.keyboard.type("hr")
        page.locator('[title="hr"]').first.click()
        dialog_title.click()  # close the picker, keep the dialog
        launch = page.get_by_role("button", name="Launch 1 run")
        launch.wait_for(state="visible")
    except Exception as error:  # noqa: BLE001
        ui.fail(f"the Materialize dialog did not offer partition hr: {error}", "02_dialog_failure")
    ui.shot("02_materialize_dialog_partition_hr")
    launch.click()
    toast = page.get_by_text("Launched run")
    toast.wait_for(state="visible")
    ui.shot("03_run_launched")

    # The UI launches the selected assets as a run of the implicit asset job, tagged with the partition.
    [run] = launched_runs(ui.dev)
    assert run["tags"].get("dagster/partition") == "hr", run
    started = time.monotonic()
    while run["status"] not in {"SUCCESS", "FAILURE", "CANCELED"} and time.monotonic() - started < RUN_TIMEOUT_S:
        time.sleep(2)
        [run] = launched_runs(ui.dev)
    page.goto(f"{ui.dev.url}/runs/{run['runId']}")
    if run["status"] == "SUCCESS":
        page.get_by_text("Success").first.wait_for(state="visible")
    shot = ui.shot("04_run_succeeded")
    assert run["status"] == "SUCCESS", (f"run {run['runId']} ended {run['status']}: "
                                        f"{run_errors(ui.dev, run['runId'])}\nscreenshot: {shot}")
    materialized = graphql(ui.dev.url, """query($id: ID!) { runOrError(runId: $id) { ... on Run {
        assetMaterializations { assetKey { path } partition } } } }""", {"id": run["runId"]})["runOrError"]
    assert sorted((tuple(m["assetKey"]["path"]), m["partition"]) for m in materialized["assetMaterializations"]) \
        == sorted((("local", stage), "hr") for stage in STAGES), materialized


def test_asset_page_shows_the_runs_metadata(ui):
    page = ui.page
    page.goto(f"{ui.dev.url}/assets/local/embeddings?view=events&partition=hr")
    _dismiss_welcome(ui)
    for label in ("chunks_embedded", "documents_total", "table_version", "api_calls"):
        try:
            page.get_by_text(label, exact=True).first.wait_for(state="visible")
        except Exception:  # noqa: BLE001
            ui.fail(f"the embeddings asset page does not show the metadata {label!r}", "05_asset_page_failure")
    ui.shot("05_asset_page_metadata")
