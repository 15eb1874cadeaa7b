"""Source API pools: a backfill of many spaces cannot flood one Confluence site.

Two Confluence sites (two simulators, each answering every request after 0.2 s), each its own source with
its own pool (`pool:` in the sources file), each pool limited to 1 with `dagster instance concurrency set`
on the production instance (deploy/postgres/dagster.yaml, a fresh database on the PostgreSQL server): slots
are claimed with SELECT ... FOR UPDATE SKIP LOCKED, which SQLite ignores, so on the embedded SQLite instance
two processes can take the same slot at the same moment. Six `rag-sync sync` processes, one space each, start
at once. From the runs' event logs: the raw steps (the only ones that call the API) of one site never
overlap, some waited for their pool, and steps of the two sites did run at the same time.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from rag_sync_pipeline_tests.fakes.confluence import confluence_simulator
from rag_sync_pipeline_tests.postgres_support import fresh_database, instance_environment, postgres_home

pytestmark = pytest.mark.timeout(600)

BIN = Path(sys.executable).parent
SITES = {"wiki_a": ("A1", "A2", "A3"), "wiki_b": ("B1", "B2", "B3")}
TOKEN_ENV = "POOL_TEST_CONFLUENCE_TOKEN"


def _raw_step_intervals(instance: dg.DagsterInstance, source: str) -> tuple[list[tuple[float, float, str]], int]:
    """(start, end, partition) of each run's raw step for `source`, and how many steps waited for a pool."""
    intervals, blocked = [], 0
    step_key = f"{source}__raw_documents"
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=f"{source}_sync")):
        assert run.status == dg.DagsterRunStatus.SUCCESS, f"run {run.run_id} {run.status}"
        events = {}
        for entry in instance.all_logs(run.run_id):
            if entry.step_key != step_key or entry.dagster_event is None:
                continue
            kind = entry.dagster_event.event_type_value
            if kind in ("STEP_START", "STEP_SUCCESS"):
                events[kind] = entry.timestamp
            elif kind == "ENGINE_EVENT" and "blocked by limit for pool" in (entry.dagster_event.message or ""):
                blocked += 1
        intervals.append((events["STEP_START"], events["STEP_SUCCESS"], run.tags["dagster/partition"]))
    return sorted(intervals), blocked


def test_each_sites_pool_limits_its_api_steps_while_sites_run_side_by_side(clean_env, tmp_path):
    with fresh_database("rag_sync_pools") as database:
        for name, value in instance_environment(database).items():
            clean_env.setenv(name, value)
        _run_six_syncs_and_check_the_pools(postgres_home(tmp_path / "dagster_home"), tmp_path)


def _run_six_syncs_and_check_the_pools(home: Path, tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)  # create the schema once, before six processes use it
    with confluence_simulator(latency=0.2) as site_a, confluence_simulator(latency=0.2) as site_b:
        entries = []
        for (source, spaces), sim in zip(SITES.items(), (site_a, site_b), strict=True):
            for space in spaces:
                sim.add_space(space)
                for i in range(2):
                    sim.add_page(space, f"{space} page {i}", f"<p>Runbook {i} of space {space}.</p>")
            entries.append(f"  - name: {source}\n    type: confluence\n    pool: {source}_api\n    url: {sim.url}\n"
                           f"    username: {sim.username}\n    api_token_env: {TOKEN_ENV}\n"
                           f"    spaces: [{', '.join(spaces)}]\n    retry_backoff_seconds: 0.01\n")
        (tmp_path / "sources.yaml").write_text("sources:\n" + "".join(entries))
        env = {**os.environ, "DAGSTER_HOME": str(home), "RAG_LOCAL_ENABLED": "false", TOKEN_ENV: site_a.token,
               "RAG_SOURCES_FILE": str(tmp_path / "sources.yaml"), "RAG_LANCEDB_URI": str(tmp_path / "lancedb"),
               "EXTERNAL_SYNC_ENABLED": "true"}
        for source in SITES:  # the operator's command, as the README says
            subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", f"{source}_api", "1"],
                           env=env, check=True, capture_output=True, timeout=120)

        started = time.monotonic()
        processes = [subprocess.Popen([str(BIN / "rag-sync"), "sync", "--source", source, "--partition", space,
                                       "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for source, spaces in SITES.items() for space in spaces]
        outputs = [p.communicate(timeout=500) for p in processes]
        elapsed = time.monotonic() - started
        for process, (_, stderr) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()
                if p.name in ("wiki_a_api", "wiki_b_api")} == {"wiki_a_api": 1, "wiki_b_api": 1}
        steps = {source: _raw_step_intervals(instance, source) for source in SITES}
        for source in SITES:  # the final stage reports the API calls its run's raw stage made
            api_calls = {stage: {r.run_id: r.asset_materialization.metadata["api_calls"].value for r in
                                 instance.fetch_materializations(dg.AssetKey([source, stage]), limit=10).records}
                         for stage in ("raw_documents", "embeddings")}
            assert api_calls["embeddings"] == api_calls["raw_documents"] and len(api_calls["embeddings"]) == 3
            assert all(calls > 0 for calls in api_calls["embeddings"].values())

    timeline = {source: [(round(s - started_at, 1), round(e - started_at, 1), p) for s, e, p in intervals]
                for started_at in [min(s for intervals, _ in steps.values() for s, _, _ in intervals)]
                for source, (intervals, _) in steps.items()}
    print(f"6 concurrent syncs in {elapsed:.1f}s; raw steps (start s, end s, space): {timeline}; "
          f"blocked: {[b for _, b in steps.values()]}")
    for source, (intervals, _) in steps.items():
        assert len(intervals) == 3
        for (s1, e1, p1), (s2, e2, p2) in itertools.combinations(intervals, 2):
            assert not (s1 < e2 and s2 < e1), f"{source}: raw steps of {p1} and {p2} overlapped: {timeline}"
    assert sum(b for _, b in steps.values()) >= 1, f"no step ever waited for its pool: {timeline}"
    (a, _), (b, _) = steps.values()
    assert any(s1 < e2 and s2 < e1 for (s1, e1, _), (s2, e2, _) in itertools.product(a, b)), \
        f"the two sites' API steps never ran at the same time: {timeline}"
