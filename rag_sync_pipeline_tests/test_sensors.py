"""The local source's sensor: adds partitions, requests runs only for partitions that changed."""

import dagster as dg

from rag_sync_pipeline_tests.dagster_support import local_definitions, materialize_partition


def tick(instance: dg.DagsterInstance) -> dg.SensorResult:
    definitions = local_definitions()
    sensor = definitions.resolve_sensor_def("local_sync_sensor")
    context = dg.build_sensor_context(instance=instance, resources=definitions.resources)
    return sensor(context)


def add_partitions(instance, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_first_tick_adds_every_folder_as_a_partition_and_requests_runs_for_all(local_env, instance):
    result = tick(instance)
    [added] = result.dynamic_partitions_requests
    assert added.partitions_def_name == "local_partitions" and sorted(added.partition_keys) == ["eng", "hr"]
    assert sorted(r.partition_key for r in result.run_requests) == ["eng", "hr"]
    assert all(r.run_key for r in result.run_requests)


def test_no_change_requests_no_run_and_says_why(local_env, instance):
    add_partitions(instance, tick(instance))
    assert materialize_partition(instance, "eng").success
    assert materialize_partition(instance, "hr").success
    result = tick(instance)
    assert result.run_requests == [] and not result.dynamic_partitions_requests
    assert "eng: unchanged" in str(result.skip_reason) and "hr: unchanged" in str(result.skip_reason)


def test_a_change_requests_a_run_for_that_partition_only(local_env, instance, corpus):
    add_partitions(instance, tick(instance))
    assert materialize_partition(instance, "eng").success
    assert materialize_partition(instance, "hr").success
    (corpus / "hr" / "leave.txt").write_text("Full-time employees get 30 days of paid annual leave.\n")
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["hr"]
    # The same tick again names the same work: the run key dedupes it.
    assert [r.run_key for r in tick(instance).run_requests] == [result.run_requests[0].run_key]


def test_new_folder_becomes_a_new_partition(local_env, instance, corpus):
    add_partitions(instance, tick(instance))
    for partition in ("eng", "hr"):
        assert materialize_partition(instance, partition).success
    (corpus / "sales").mkdir()
    (corpus / "sales" / "playbook.md").write_text("# Playbook\n\nCall within a day.\n")
    result = tick(instance)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["sales"]
    assert [r.partition_key for r in result.run_requests] == ["sales"]


def test_run_that_died_between_stages_is_requested_again(local_env, instance):
    add_partitions(instance, tick(instance))
    assert materialize_partition(instance, "hr").success
    assert materialize_partition(instance, "eng", stages=("raw_documents",)).success
    # The source has not moved since raw_documents committed, but the index has not caught up.
    assert [r.partition_key for r in tick(instance).run_requests] == ["eng"]


def test_partition_with_a_run_in_flight_is_skipped(local_env, instance, corpus):
    add_partitions(instance, tick(instance))
    definitions = local_definitions()
    job = definitions.resolve_job_def("local_sync")
    run = instance.create_run_for_job(job, tags={"dagster/partition": "eng"}, status=dg.DagsterRunStatus.STARTED)
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["hr"]
    instance.report_run_failed(run)
    assert "eng" not in [r.partition_key for r in tick(instance).run_requests]  # failed just now: backs off
