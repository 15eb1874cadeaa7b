"""The run queue of the repository's dagster.yaml under load, in a real `dagster dev` (webserver + daemon).

Two local source instances from a sources file (`alpha`, `beta`), two partitions each with distinct names,
written only once the sensors are stopped (so the first run of each has documents to embed); every partition
is then submitted twice at once through GraphQL (8 runs). From the runs' start and end times: two runs of one
partition never overlap, different partitions do run at the same time, and never more than
`max_concurrent_runs` (2) at once.
"""

from __future__ import annotations

import itertools
import shutil
import time

import pytest
from dagster_graphql import DagsterGraphQLClient

from rag_sync_pipeline_tests.e2e_runs import describe_runs, job_runs, run_errors
from rag_sync_pipeline_tests.e2e_support import REPO_ROOT, DagsterDev, clean_environment, graphql
from rag_sync_pipeline_tests.test_ui_browser import ADD_PARTITION, SENSOR_QUERY, STOP_SENSOR

pytestmark = pytest.mark.timeout(900)

LOCATION = "rag_sync_pipeline"
PARTITIONS = {"alpha": ("alpha_one", "alpha_two"), "beta": ("beta_one", "beta_two")}
MAX_CONCURRENT_RUNS = 2
TIMEOUT_S = 480


def _overlap(a: dict, b: dict) -> bool:
    return a["startTime"] < b["endTime"] and b["startTime"] < a["endTime"]


def test_queue_runs_partitions_concurrently_but_one_run_per_partition(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    entries = []
    for source in PARTITIONS:  # empty until the sensors are stopped: every submitted run then has work to do
        (tmp_path / source).mkdir()
        entries.append(f"  - name: {source}\n    type: local\n    root: {tmp_path / source}\n")
    (tmp_path / "sources.yaml").write_text("sources:\n" + "".join(entries))
    env = clean_environment(RAG_LOCAL_ENABLED="false", RAG_SOURCES_FILE=str(tmp_path / "sources.yaml"),
                            RAG_LANCEDB_URI=str(tmp_path / "lancedb"), DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1",
                            TOKENIZERS_PARALLELISM="false")
    with DagsterDev(env, tmp_path / "dagster_dev.log") as dev:
        dev.wait_until_ready(timeout_s=180)
        query = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
        repository = next(n["name"] for n in graphql(dev.url, query)["repositoriesOrError"]["nodes"]
                          if n["location"]["name"] == LOCATION)
        selector = {"repositoryLocationName": LOCATION, "repositoryName": repository}
        for source, partitions in PARTITIONS.items():
            sensor = graphql(dev.url, SENSOR_QUERY, {"selector": {**selector, "sensorName": f"{source}_sync_sensor"}})
            graphql(dev.url, STOP_SENSOR, {"id": sensor["sensorOrError"]["id"]})
            for partition in partitions:
                (tmp_path / source / partition).mkdir()
                for i in range(3):
                    (tmp_path / source / partition / f"note{i}.md").write_text(
                        f"# {partition} {i}\n\nNote {i} of {partition}.\n")
                graphql(dev.url, ADD_PARTITION, {"selector": selector, "name": f"{source}_partitions",
                                                 "key": partition})
        client = DagsterGraphQLClient("127.0.0.1", port_number=dev.port, timeout=60)
        submitted = [client.submit_job_execution(f"{source}_sync", repository_location_name=LOCATION,
                                                 repository_name=repository, tags={"dagster/partition": partition})
                     for _ in range(2) for source, partitions in PARTITIONS.items() for partition in partitions]
        started = time.monotonic()
        while time.monotonic() - started < TIMEOUT_S:
            runs = [r for r in job_runs(dev) if r["runId"] in submitted]
            if all(r["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for r in runs):
                break
            time.sleep(3)
        else:
            raise AssertionError(f"runs not finished after {TIMEOUT_S}s: {describe_runs(runs)}\n{dev.describe()}")
        failed = [r for r in runs if r["status"] != "SUCCESS"]
        assert not failed, [(r["runId"], run_errors(dev, r["runId"])) for r in failed]

    assert len(runs) == 8
    timeline = sorted((round(r["startTime"] - min(x["startTime"] for x in runs), 1),
                       round(r["endTime"] - min(x["startTime"] for x in runs), 1),
                       r["tags"]["dagster/partition"]) for r in runs)
    for a, b in itertools.combinations(runs, 2):
        if a["tags"]["dagster/partition"] == b["tags"]["dagster/partition"]:
            assert not _overlap(a, b), f"two runs of one partition overlapped: {timeline}"
    # Concurrency at each run's start: how many runs were executing then.
    concurrent = [sum(1 for o in runs if o["startTime"] <= r["startTime"] < o["endTime"]) for r in runs]
    assert max(concurrent) <= MAX_CONCURRENT_RUNS, f"more than {MAX_CONCURRENT_RUNS} runs at once: {timeline}"
    assert max(concurrent) == MAX_CONCURRENT_RUNS, f"partitions never ran concurrently: {timeline}"
    print("timeline (start s, end s, partition):", timeline)
