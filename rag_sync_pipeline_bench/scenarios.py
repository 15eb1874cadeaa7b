"""The Confluence scenarios of figures 2, 3, 5, 6 and 8, and the small S3 and Notion set-ups for figure 4."""

from __future__ import annotations

import random
from pathlib import Path

from rag_sync_pipeline.store import LanceStore
from rag_sync_pipeline.store.lance import partition_filter
from rag_sync_pipeline_bench.commands import Workspace, run_rag_sync, stage_durations
from rag_sync_pipeline_bench.corpus import PageSpec, edit_one_paragraph, generate_page, populate_space, render
from rag_sync_pipeline_tests.fakes.notion import block

TOKEN = "bench-token-not-a-secret"


def confluence_workspace(root: Path, sim, space: str) -> Workspace:
    return Workspace(root, {"CONFLUENCE_URL": sim.url, "CONFLUENCE_USERNAME": sim.username,
                            "CONFLUENCE_API_TOKEN": sim.token, "CONFLUENCE_SPACES": space})


def sync(workspace: Workspace, sim=None, source: str = "confluence", partition: str | None = None) -> dict:
    """One `rag-sync sync` of the partition: its summary, wall time, peak RSS, API calls and stage times."""
    if sim is not None:
        sim.reset_counts()
    args = ["sync", "--source", source, "--json"] + (["--partition", partition] if partition else [])
    result = run_rag_sync(workspace, *args)
    summary = result.summary()
    return {"wall_s": round(result.wall_s, 2), "cpu_s": round(result.cpu_s, 2),
            "peak_rss_mb": round(result.peak_rss_bytes / 2**20, 1),
            "api_calls": sum(sim.calls.values()) if sim is not None else None, "summary": summary,
            "stages_s": stage_durations(workspace, summary["run_id"]),
            "stages_cpu_s": stage_durations(workspace, summary["run_id"], "cpu_s")}


def chunk_texts(workspace: Workspace, source: str, partition: str) -> list[str]:
    store = LanceStore(workspace.lancedb_uri)
    return store.read("chunks", partition_filter(source, partition), ["text"]).column("text").to_pylist()


def edit_pages(sim, specs: dict[str, PageSpec], fraction: float, seed: int = 5) -> int:
    """Rewrite `fraction` of the pages (new content, new version); returns how many."""
    sim.advance(hours=1)
    rng = random.Random(seed)
    chosen = rng.sample(sorted(specs), max(1, round(len(specs) * fraction)))
    for page_id in chosen:
        spec = generate_page(10_000_000 + int(page_id))
        specs[page_id] = spec
        sim.edit_page(page_id, body=render(spec))
    return len(chosen)


def edit_long_page(sim, specs: dict[str, PageSpec], seed: int = 9) -> tuple[str, int]:
    """Change one paragraph of the longest page; returns its id and its number of sections."""
    sim.advance(hours=1)
    page_id = max(specs, key=lambda p: len(render(specs[p])))
    edit_one_paragraph(specs[page_id], seed)
    sim.edit_page(page_id, body=render(specs[page_id]))
    return page_id, len(specs[page_id].sections)


def populate(sim, space: str, pages: int, seed_base: int) -> dict[str, PageSpec]:
    return populate_space(sim, space, pages, seed_base)


# -- figure 4 for S3 and Notion: a synced partition, then a tick ------------------------------------------

def s3_workspace(root: Path, proxy_url: str, bucket: str) -> Workspace:
    from rag_sync_pipeline_tests.s3_support import TEST_CREDENTIALS

    return Workspace(root, {"S3_SYNC_BUCKET": bucket, "S3_ENDPOINT_URL": proxy_url, "AWS_REGION": "us-east-1",
                            "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS["aws_access_key_id"],
                            "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS["aws_secret_access_key"]})


def fill_bucket(moto, bucket: str, objects: int) -> None:
    from rag_sync_pipeline_tests.s3_support import upload_many

    client = moto.client()
    client.create_bucket(Bucket=bucket)
    rng = random.Random(21)
    upload_many(client, bucket, ((f"notes/note-{i:05d}.txt", f"Note {i}. {rng.random()}".encode())
                                 for i in range(objects)))


def notion_workspace(root: Path, notion, database: str) -> Workspace:
    return Workspace(root, {"NOTION_API_KEY": notion.token, "NOTION_BASE_URL": notion.base_url,
                            "NOTION_REQUESTS_PER_SECOND": "2000", "NOTION_DATABASE_IDS": database})


def fill_notion(notion, rows: int) -> str:
    database, [data_source] = notion.add_database("Runbooks")
    for i in range(rows):
        notion.add_row(data_source, f"Runbook {i}", [block("paragraph", f"Runbook {i} restarts service {i}.")])
    return database
