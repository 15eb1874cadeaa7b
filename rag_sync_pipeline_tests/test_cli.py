"""rag-sync as a user runs it: a real subprocess against a DAGSTER_HOME and a LanceDB on disk."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg

RAG_SYNC = str(Path(sys.executable).parent / "rag-sync")


def rag_sync(env, *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([RAG_SYNC, *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_sync_search_status_round_trip(cli_env, corpus):
    summary = json.loads(rag_sync(cli_env, "sync", "--source", "local", "--partition", "hr", "--json").stdout)
    assert summary["success"] and summary["partition"] == "hr"
    assert summary["documents_added"] == 2 and summary["chunks_embedded"] == summary["chunks_total"] == 2
    assert summary["documents_failed"] == 0

    hits = json.loads(rag_sync(cli_env, "search", "how much is reimbursed for meals", "--json", "-k", "2").stdout)
    assert hits[0]["doc_id"] == "expenses.md" and "EUR 45 per day" in hits[0]["text"]
    assert hits[0]["title"] == "Expenses" and hits[0]["url"].startswith("file://") and hits[0]["score"] > 0.3
    assert {"source", "partition", "heading_path"} <= hits[0].keys()

    (corpus / "hr" / "leave.txt").unlink()
    again = json.loads(rag_sync(cli_env, "sync", "--source", "local", "--partition", "hr", "--json").stdout)
    assert again["documents_deleted"] == 1 and again["chunks_embedded"] == 0 and again["documents_unchanged"] == 1

    # Nothing changed since: the probe says so, and no run is started (no model, no Dagster run overhead).
    idle = json.loads(rag_sync(cli_env, "sync", "--source", "local", "--partition", "hr", "--json").stdout)
    assert idle["success"] and idle["unchanged"] and idle["run_id"] == ""
    assert (idle["documents_total"], idle["chunks_total"], idle["chunks_embedded"]) == (1, 1, 0)

    [row] = json.loads(rag_sync(cli_env, "status", "--json").stdout)
    assert (row["source"], row["partition"], row["documents"], row["chunks"]) == ("local", "hr", 1, 1)
    assert row["in_sync"] is True and row["fresh"] is True  # synced just now, bound 24 hours
    assert row["table_version"] > 0 and row["last_sync"]
    assert "hr" in rag_sync(cli_env, "status").stdout

    # The runs were recorded in the instance, as runs of the named job, so the UI shows them.
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="local_sync", tags={"dagster/partition": "hr"}))
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert instance.get_dynamic_partitions("local_partitions") == ["hr"]


def test_sync_without_partition_syncs_every_partition_and_plain_output_reads_well(cli_env):
    result = rag_sync(cli_env, "sync")
    lines = [line for line in result.stdout.splitlines() if line.startswith("local/")]
    assert [line.split(":")[0] for line in lines] == ["local/eng", "local/hr"]
    assert all("ok |" in line and "documents_added=" in line for line in lines)
    search = rag_sync(cli_env, "search", "which vector database did we choose", "-k", "1").stdout
    assert "ADR 7: Use LanceDB" in search


def test_unknown_partition_and_source_fail_clearly(cli_env):
    missing = rag_sync(cli_env, "sync", "--source", "local", "--partition", "nope", check=False)
    assert missing.returncode == 2 and "no partition 'nope'" in missing.stderr and "eng, hr" in missing.stderr
    unknown = rag_sync(cli_env, "sync", "--source", "wiki", check=False)
    assert unknown.returncode == 2 and "unknown source 'wiki'" in unknown.stderr


def test_search_before_any_sync_says_so(cli_env):
    assert "no results" in rag_sync(cli_env, "search", "anything").stdout


def test_a_sync_with_nothing_to_embed_never_imports_torch(cli_env, corpus):
    """Importing torch and loading the model cost seconds; a no-change sync (or one whose only change is a
    deletion) embeds nothing, so it must not pay for them."""
    first = json.loads(rag_sync(cli_env, "sync", "--source", "local", "--partition", "hr", "--json").stdout)
    assert first["chunks_embedded"] == 2
    (corpus / "hr" / "leave.txt").unlink()
    probe = ("import sys; from rag_sync_pipeline.cli import main\n"
             "try:\n    main(['sync', '--source', 'local', '--partition', 'hr', '--json'])\n"
             "except SystemExit as exit:\n"
             "    print('EXIT', exit.code, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], env=cli_env, capture_output=True, text=True, timeout=300)
    summary = json.loads(result.stdout[:result.stdout.rindex("EXIT")])
    assert summary["documents_deleted"] == 1 and summary["chunks_embedded"] == 0 and summary["success"]
    assert result.stdout.strip().endswith("EXIT 0 False False"), result.stdout[-500:] + result.stderr[-2000:]


def test_the_model_loads_on_a_background_thread_while_the_raw_stage_fetches(cli_env, corpus):
    """Loading torch and the model costs seconds: once the raw stage knows documents changed it starts the load
    on a thread, so that time overlaps fetching, converting and chunking instead of adding to the run."""
    probe = ("import sys, threading; import rag_sync_pipeline.transform.embedding as embedding\n"
             "loads = []; original = embedding._load_model\n"
             "def recording(*args):\n"
             "    loads.append(threading.current_thread().name); return original(*args)\n"
             "embedding._load_model = recording\n"
             "from rag_sync_pipeline.cli import main\n"
             "try:\n    main(['sync', '--source', 'local', '--partition', 'hr', '--json'])\n"
             "except SystemExit as exit:\n"
             "    print('EXIT', exit.code, loads)\n")
    result = subprocess.run([sys.executable, "-c", probe], env=cli_env, capture_output=True, text=True, timeout=300)
    summary = json.loads(result.stdout[:result.stdout.rindex("EXIT")])
    assert summary["chunks_embedded"] == 2 and summary["success"]
    assert result.stdout.strip().endswith("EXIT 0 ['embedder-warm-up']"), result.stdout[-500:] + result.stderr[-2000:]


def test_a_sync_of_unchanged_partitions_starts_no_run_and_never_imports_dagster_or_torch(cli_env, corpus):
    """`rag-sync sync` where nothing changed is what a user runs most: the probes and the ledger answer it,
    before Dagster (about a second to import) or the model are loaded; for one partition or all of them."""
    rag_sync(cli_env, "sync", "--source", "local")
    for args, expected in ((["--partition", "hr"], {"hr"}), ([], {"eng", "hr"})):
        probe = ("import sys; from rag_sync_pipeline.cli import main\n"
                 f"try:\n    main(['sync', '--source', 'local', '--json', *{args!r}])\n"
                 "except SystemExit as exit:\n"
                 "    print('EXIT', exit.code, 'dagster' in sys.modules, 'torch' in sys.modules)\n")
        result = subprocess.run([sys.executable, "-c", probe], env=cli_env, capture_output=True, text=True,
                                timeout=300)
        assert result.stdout.strip().endswith("EXIT 0 False False"), result.stdout[-500:] + result.stderr[-2000:]
        output = json.loads(result.stdout[:result.stdout.rindex("EXIT")])
        summaries = output if isinstance(output, list) else [output]
        assert {s["partition"] for s in summaries} == expected
        assert all(s["unchanged"] and s["run_id"] == "" and s["success"] for s in summaries)
    assert {s["partition"]: s["documents_total"] for s in summaries} == {"eng": 3, "hr": 2}

    (corpus / "hr" / "leave.txt").write_text("Leave policy, revised.\n")
    changed = json.loads(rag_sync(cli_env, "sync", "--source", "local", "--json").stdout)
    by_partition = {s["partition"]: s for s in changed}
    assert by_partition["eng"]["unchanged"] and by_partition["eng"]["run_id"] == ""
    assert by_partition["hr"]["run_id"] and by_partition["hr"]["documents_updated"] == 1
