"""One run per partition at a time, including `rag-sync sync`, which runs outside the run queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from rag_sync_pipeline.defs.exclusive import PartitionBusy, launch_order, wait_for_earlier_runs, wait_until_idle

RAG_SYNC = str(Path(sys.executable).parent / "rag-sync")


def _add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, partition: str = "hr",
             job_name: str = "local_sync") -> str:
    run = dg.DagsterRun(job_name=job_name, run_id=os.urandom(16).hex(), status=status,
                        tags={"dagster/partition": partition})
    instance.add_run(run)
    return run.run_id


def test_a_later_run_waits_for_an_earlier_started_run_of_its_partition(instance):
    pair = [_add_run(instance, dg.DagsterRunStatus.STARTED) for _ in range(2)]
    earlier, later = sorted(pair, key=lambda run_id: launch_order(instance.get_run_record_by_id(run_id)))
    with pytest.raises(PartitionBusy, match=earlier):
        wait_for_earlier_runs(instance, later, "local", "hr", timeout_s=0.5, poll_s=0.1)
    # The earlier run goes on: of two racing runs exactly one waits.
    assert wait_for_earlier_runs(instance, earlier, "local", "hr", timeout_s=0.5, poll_s=0.1) < 0.5
    # Other partitions, other sources and queued runs do not hold a run back (a queued run waits in turn).
    assert wait_for_earlier_runs(instance, _add_run(instance, dg.DagsterRunStatus.STARTED, "eng"), "local", "eng",
                                 timeout_s=0.5) < 0.5
    other_source = _add_run(instance, dg.DagsterRunStatus.STARTED, job_name="handbook_sync")
    assert wait_for_earlier_runs(instance, other_source, "handbook", "hr", timeout_s=0.5) < 0.5
    instance.report_run_canceled(instance.get_run_by_id(earlier))
    assert wait_for_earlier_runs(instance, later, "local", "hr", timeout_s=0.5, poll_s=0.1) < 0.5


def test_a_run_not_started_yet_holds_back_a_cli_launch(instance):
    # NOT_STARTED stands for the queued states here (a QUEUED run record needs a code location origin).
    pending = _add_run(instance, dg.DagsterRunStatus.NOT_STARTED)
    running = _add_run(instance, dg.DagsterRunStatus.STARTED)
    assert wait_for_earlier_runs(instance, running, "local", "hr", timeout_s=0.3) < 0.3
    instance.report_run_canceled(instance.get_run_by_id(running))
    with pytest.raises(PartitionBusy, match=pending):
        wait_until_idle(instance, "local", "hr", timeout_s=0.3, poll_s=0.1)
    assert wait_until_idle(instance, "local", "eng", timeout_s=0.3) < 0.5


@pytest.fixture
def cli_env(local_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    local_env.setenv("DAGSTER_HOME", str(home))
    return dict(os.environ)


def test_cli_gives_up_on_a_partition_with_a_run_in_flight(cli_env):
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        blocking = _add_run(instance, dg.DagsterRunStatus.STARTED)
    result = subprocess.run([RAG_SYNC, "sync", "--source", "local", "--partition", "hr", "--wait", "2", "--json"],
                            env=cli_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"waiting for run {blocking}" in result.stderr and "not starting another one" in result.stderr
    assert json.loads(result.stdout)["success"] is False


def test_two_concurrent_cli_syncs_of_one_partition_never_overlap(cli_env):
    command = [RAG_SYNC, "sync", "--source", "local", "--partition", "eng", "--full-refresh", "--json"]
    # The instance exists before the two processes race (as after `make run`): creating a fresh SQLite
    # instance's schema from two processes at once is not what this test is about.
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        instance.get_runs(limit=1)
    processes = [subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        assert json.loads(stdout)["success"], stdout

    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/partition": "eng"}))
    assert len(records) == 2 and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    # Both processes may start their runs within the same moment; `first` is the one that went on.
    first, second = sorted(records, key=lambda r: r.end_time)
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        second_logs = instance.all_logs(second.dagster_run.run_id)
    materialized_at = [e.timestamp for e in second_logs
                       if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
    intervals = [(round(r.start_time, 2), round(r.end_time, 2)) for r in (first, second)]
    assert len(materialized_at) == 4, second_logs
    # The second process waited, before launching (CLI) or in its first stage (the run's own guard); either way
    # it wrote nothing until the first run had ended.
    assert min(materialized_at) >= first.end_time, intervals
    waited_outside = second.start_time >= first.end_time
    waited_inside = any(f"waiting for run {first.dagster_run.run_id}" in (e.user_message or "") for e in second_logs)
    assert waited_outside or waited_inside, intervals
    print(f"runs (start, end): {intervals}; waited {'before launch' if waited_outside else 'inside the run'}")
