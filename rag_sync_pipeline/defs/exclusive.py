"""One run per partition at a time, whatever launched it.

The queued run coordinator already holds back a second run of a partition (`dagster/partition`, limit 1 per
value, in both instance configurations), but only for runs that go through the queue: `rag-sync sync` executes
in its own process and a UI launch of a subset of stages runs as the implicit asset job. So every stage also
checks, at its start, for an earlier run of the same source and partition that is starting or started, and waits
for it. The run record exists before any step executes, so of two runs racing for one partition exactly the
one created first goes on (ties broken by run id), whichever process each lives in; runs that are only queued
are not waited for (the queue would in turn wait for this run: a deadlock). A run that waits longer than the
bound fails with a message naming the run it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES, RunRecord

EXECUTING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
DEFAULT_WAIT_SECONDS = 1800
POLL_SECONDS = 2.0


class PartitionBusy(Exception):
    """Another run of the partition did not finish within the wait bound."""


def touches_source(run: dg.DagsterRun, source: str) -> bool:
    """Whether a run syncs one of the source's stages (its job, or a selection of its assets)."""
    if run.job_name == f"{source}_sync":
        return True
    return any(key.path and key.path[0] == source for key in run.asset_selection or ())


def runs_of_partition(instance: dg.DagsterInstance, source: str, partition: str,
                      statuses=None) -> list[RunRecord]:
    records = instance.get_run_records(filters=dg.RunsFilter(
        tags={"dagster/partition": partition}, statuses=list(statuses or NOT_FINISHED_STATUSES)))
    return [r for r in records if touches_source(r.dagster_run, source)]


def launch_order(record: RunRecord) -> tuple:
    """Creation time, then run id: SQLite stores whole seconds, and ties must still order the same everywhere."""
    return (record.create_timestamp.timestamp(), record.dagster_run.run_id)


def wait_for_earlier_runs(instance: dg.DagsterInstance, run_id: str, source: str, partition: str,
                          timeout_s: float = DEFAULT_WAIT_SECONDS, log: Callable[[str], None] | None = None,
                          poll_s: float = POLL_SECONDS) -> float:
    """Wait while a run of (source, partition) created before `run_id` is starting or started.

    Returns the seconds waited; raises PartitionBusy after `timeout_s`.
    """
    mine = instance.get_run_record_by_id(run_id)
    if mine is None:  # not a stored run (e.g. a direct asset invocation in a test): nothing to order against
        return 0.0
    started = time.monotonic()
    announced = None
    while True:
        earlier = [r for r in runs_of_partition(instance, source, partition, EXECUTING)
                   if r.dagster_run.run_id != run_id and launch_order(r) < launch_order(mine)]
        if not earlier:
            return time.monotonic() - started
        blocking = earlier[0].dagster_run.run_id
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise PartitionBusy(f"{source} partition {partition!r} is being synced by run {blocking}, still "
                                f"{earlier[0].dagster_run.status.value} after {waited:.0f}s; not syncing it twice at "
                                "once")
        if log is not None and blocking != announced:
            log(f"{source} partition {partition!r}: waiting for run {blocking} to finish (one run per "
                "partition at a time)")
            announced = blocking
        time.sleep(poll_s)


def wait_until_idle(instance: dg.DagsterInstance, source: str, partition: str, timeout_s: float,
                    log: Callable[[str], None] | None = None, poll_s: float = POLL_SECONDS) -> float:
    """Before launching from outside the queue: wait while any run of (source, partition) is unfinished,
    queued ones included. Returns the seconds waited; raises PartitionBusy after `timeout_s`."""
    started = time.monotonic()
    announced = None
    while True:
        busy = runs_of_partition(instance, source, partition)
        if not busy:
            return time.monotonic() - started
        blocking = busy[0].dagster_run
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise PartitionBusy(f"{source} partition {partition!r} has run {blocking.run_id} "
                                f"{blocking.status.value} for {waited:.0f}s or more; not starting another one")
        if log is not None and blocking.run_id != announced:
            log(f"{source}/{partition}: waiting for run {blocking.run_id} ({blocking.status.value}) to finish")
            announced = blocking.run_id
        time.sleep(poll_s)
