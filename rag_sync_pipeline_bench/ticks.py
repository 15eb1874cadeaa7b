"""Figure 4: one sensor tick with nothing changed, per source: the API calls it made and its time."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import dagster as dg

from rag_sync_pipeline.definitions import build_definitions
from rag_sync_pipeline.settings import load_settings
from rag_sync_pipeline_bench.commands import Workspace


def tick(workspace: Workspace, sensor_name: str, count_calls: Callable[[], Counter]) -> dict:
    """Evaluate the sensor twice (the first tick of a process also learns what kind of site it talks to) and
    report the second: calls, milliseconds per partition, and that it asked for no run."""
    workspace.activate()
    definitions = build_definitions(load_settings())
    sensor = definitions.resolve_sensor_def(sensor_name)
    with workspace.instance() as instance:
        context = dg.build_sensor_context(instance=instance, resources=definitions.resources)
        sensor(context)
        before = Counter(count_calls())
        started = time.perf_counter()
        result = sensor(context)
        elapsed = time.perf_counter() - started
        calls = Counter(count_calls()) - before
        partitions = max(1, len(instance.get_dynamic_partitions(f"{sensor_name.split('_sync_sensor')[0]}"
                                                                  "_partitions")))
    return {"api_calls": sum(calls.values()), "calls_by_kind": dict(calls),
            "ms_per_partition": round(elapsed * 1000 / partitions, 1), "partitions": partitions,
            "runs_requested": len(result.run_requests or [])}
