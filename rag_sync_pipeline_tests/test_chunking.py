import pytest

from rag_sync_pipeline.transform.chunking import MarkdownChunker
from rag_sync_pipeline_tests.conftest import paragraph


@pytest.fixture(scope="module")
def chunker(embedder):
    return MarkdownChunker(embedder.tokenizer, embedder.max_seq_length)


def test_no_chunk_exceeds_the_models_window_counted_by_its_own_tokenizer(chunker, embedder):
    long_section = "\n\n".join(paragraph(f"topic{i}", 12) for i in range(8))
    markdown = f"# Guide\n\n## Long part\n\n{long_section}\n\n| a | b |\n|---|---|\n" + "| x | y |\n" * 200
    chunks = chunker.chunk(markdown)
    assert len(chunks) > 5
    tokenizer = embedder.loaded().tokenizer
    for chunk in chunks:
        assert len(tokenizer(chunk.text)["input_ids"]) <= embedder.max_seq_length == 256
        assert chunk.token_count <= 256


def test_every_chunk_carries_its_heading_path(chunker):
    markdown = (f"# Runbook\n\n## Failover\n\n{paragraph('failover', 10)}\n\n### Checks\n\n{paragraph('checks', 10)}"
                f"\n\n## Restore\n\n{paragraph('restore', 10)}\n")
    paths = {chunk.heading_path for chunk in chunker.chunk(markdown)}
    assert ("Runbook", "Failover") in paths or ("Runbook",) in paths
    assert ("Runbook", "Failover", "Checks") in paths
    assert ("Runbook", "Restore") in paths


def test_split_pieces_repeat_their_heading_line(chunker):
    markdown = "## Huge section\n\n" + "\n\n".join(paragraph(f"p{i}", 8) for i in range(6))
    chunks = chunker.chunk(markdown)
    assert len(chunks) >= 3
    assert all(c.text.startswith("## Huge section\n\n") for c in chunks)
    assert all(c.heading_path == ("Huge section",) for c in chunks)


def test_hash_inside_code_block_is_not_a_heading_and_code_stays_fenced(chunker):
    markdown = "# Setup\n\n```bash\n# install\npip install x\n```\n\nDone.\n"
    chunks = chunker.chunk(markdown)
    assert len(chunks) == 1
    assert chunks[0].heading_path == ("Setup",)
    assert "```bash\n# install\npip install x\n```" in chunks[0].text


def test_small_sibling_sections_do_not_merge_across_headings(chunker):
    markdown = "## A\n\nalpha text\n\n## B\n\nbeta text\n"
    assert [c.heading_path for c in chunker.chunk(markdown)] == [("A",), ("B",)]


def test_text_without_headings_and_empty_text(chunker):
    assert [c.heading_path for c in chunker.chunk("just some words\n")] == [()]
    assert chunker.chunk("") == []
    assert chunker.chunk("   \n\n") == []
