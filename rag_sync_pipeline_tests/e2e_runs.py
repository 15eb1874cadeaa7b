"""Run queries over a real `dagster dev`'s GraphQL API, shared by the deployment tests."""

from __future__ import annotations

import time

from rag_sync_pipeline_tests.e2e_support import DagsterDev, graphql

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""

ERRORS_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { eventConnection(limit: 2000) { events { __typename ... on MessageEvent { message level } } } }
  }
}
"""

FAILED = {"FAILURE", "CANCELED"}


def job_runs(dev: DagsterDev, job: str | None = None) -> list[dict]:
    """Runs (newest first), with tags as a dict."""
    variables = {"filter": {"pipelineName": job}} if job else {}
    data = graphql(dev.url, RUNS_QUERY, variables)["runsOrError"]
    assert data["__typename"] == "Runs", data
    return [{**run, "tags": {t["key"]: t["value"] for t in run["tags"]}} for run in data["results"]]


def run_errors(dev: DagsterDev, run_id: str) -> str:
    data = graphql(dev.url, ERRORS_QUERY, {"runId": run_id})["runOrError"]
    events = data.get("eventConnection", {}).get("events", [])
    return "\n".join(e["message"] for e in events if e.get("level") in {"ERROR", "CRITICAL"}) or "(no error events)"


def describe_runs(runs: list[dict]) -> list[tuple]:
    return [(r["runId"][:8], r["jobName"], r["tags"].get("dagster/partition"), r["status"]) for r in runs]


def wait_for_successful_partitions(dev: DagsterDev, jobs_partitions: dict[str, set[str]], timeout_s: float,
                                   allow_failures: bool = False) -> dict[tuple[str, str], dict]:
    """Wait until every (job, partition) has a successful run; fail at once when a run fails."""
    started = time.monotonic()
    runs: list[dict] = []
    wanted = {(job, p) for job, partitions in jobs_partitions.items() for p in partitions}
    while time.monotonic() - started < timeout_s:
        dev.assert_running()
        runs = job_runs(dev)
        failed = [r for r in runs if r["status"] in FAILED]
        assert allow_failures or not failed, "a run did not succeed:\n" + "\n".join(
            f"{r['runId']} {r['jobName']} {r['tags'].get('dagster/partition')} {r['status']}: "
            f"{run_errors(dev, r['runId'])}" for r in failed) + f"\n{dev.describe()}"
        succeeded: dict[tuple[str, str], dict] = {}
        for run in runs:
            key = (run["jobName"], run["tags"].get("dagster/partition"))
            if run["status"] == "SUCCESS" and key in wanted:
                succeeded.setdefault(key, run)
        if wanted <= set(succeeded):
            return succeeded
        time.sleep(2)
    raise AssertionError(f"not every partition synced within {timeout_s:.0f}s; runs: {describe_runs(runs)}\n"
                         f"{dev.describe()}")
