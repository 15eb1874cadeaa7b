"""Notion blocks to Markdown, on the real 36-block test page and on each block type."""

import json

from rag_sync_pipeline.transform.markdown import to_markdown
from rag_sync_pipeline.transform.notion_blocks import (
    NOTION_BLOCKS_TYPE,
    blocks_to_markdown,
    page_to_markdown,
    rich_text_to_markdown,
)
from rag_sync_pipeline_tests.fakes.notion import block, load, sample_page_tree, text_segment


def expected_texts(blocks):
    """Every piece of text a block carries, depth first, in reading order: what must reach the index."""
    texts = []
    for b in blocks:
        kind = b["type"]
        payload = b.get(kind) or {}
        if kind == "code":
            texts.append(payload["language"])  # the fence opens with it
        texts += [s["plain_text"].strip() for s in payload.get("rich_text") or [] if s["plain_text"].strip()]
        if kind in {"child_page", "child_database"}:
            texts.append(payload["title"])
        if kind == "equation":
            texts.append(payload["expression"])
        if kind in {"bookmark", "embed", "link_preview"}:
            texts.append(payload["url"])
        if kind == "link_to_page":
            texts.append(payload["page_id"].replace("-", ""))
        if kind in {"image", "file", "video"}:
            if payload["type"] == "external":
                texts.append(payload["external"]["url"])
            else:
                texts.append(payload["file"]["url"].split("?")[0].rsplit("/", 1)[-1])
        if kind == "table_row":
            texts += [s["plain_text"].strip() for cell in payload["cells"] for s in cell if s["plain_text"].strip()]
        texts += expected_texts(b.get("children") or [])
    return texts


def assert_in_order(markdown, texts):
    position = 0
    for text in texts:
        found = markdown.find(text, position)
        assert found >= 0, f"{text!r} missing after offset {position}:\n{markdown[position:position + 400]}"
        position = found + len(text)


def test_real_sample_page_keeps_every_blocks_text_in_order():
    tree = sample_page_tree()
    assert len(tree) == 36
    markdown = page_to_markdown("Block test page", tree)
    texts = expected_texts(tree)
    assert len(texts) > 50  # the page's own text plus the table's, the columns' and the made-up children
    assert_in_order(markdown, texts)
    # Made-up children of containers, read in order: toggle, callout, columns left to right, synced copy.
    assert_in_order(markdown, ["Inside the toggle", "Inside the callout", "Synced original text",
                               "Synced original text", "Column 1 text", "Column 2 text", "Column 3 text"])


def test_real_sample_page_renders_each_block_type_as_markdown():
    markdown = page_to_markdown("Block test page", sample_page_tree())
    lines = markdown.splitlines()
    assert lines[0] == "# Block test page"
    assert "## Heading 1" in lines and "### Heading 2" in lines and "#### Heading 3" in lines
    assert "## Toggle Heading 1" in lines
    assert "- Bulleted list" in lines and "1. Numbered list" in lines and "- [ ]" in lines
    assert "> Quote" in lines and "> ✅ Callout" in lines
    assert "```shell\n% ls -l\n```" in markdown
    assert "$$\nx = \\frac{-b\\pm\\sqrt{b^2-4ac}}{2a}\n$$" in markdown
    assert "| Title | Contents |" in lines and "|---|---|" in lines
    assert "---" in lines
    assert "[Child page](https://www.notion.so/0f3e507322d848eb926be808df84c169)" in lines
    assert "[Child database](https://www.notion.so/ea525a784669470db4258c4d7cb95667)" in lines
    assert "[https://hkob.notion.site/](https://hkob.notion.site/)" in lines
    assert "File: sample.txt" in lines and "Image: 1ea5da4c6b0b10c5ed42b763c162fcd9.png" in lines
    # Pre-signed file URLs expire within the hour: never a link target, never in the index.
    assert "X-Amz-" not in markdown
    assert "@Hiroyuki KOBAYASHI" in markdown and "$y = f(x)$" in markdown
    assert "[notion_ruby_mapping_test_data](https://www.notion.so/c01166c613ae45cbb96818b4ef2f5a77)" in markdown


def test_unsupported_and_navigation_blocks_are_skipped_and_counted():
    _, skipped = blocks_to_markdown(sample_page_tree())
    assert skipped == {"unsupported": 1, "table_of_contents": 1, "breadcrumb": 1}


def test_rich_text_annotations_links_and_equations():
    bold = text_segment("bold ", bold=True)
    link = text_segment("docs", link="https://example.com/docs")
    italic = {**text_segment("soft"), "annotations": {**text_segment("x")["annotations"], "italic": True,
                                                      "strikethrough": True}}
    code = {**text_segment("a|b"), "annotations": {**text_segment("x")["annotations"], "code": True}}
    equation = {"type": "equation", "equation": {"expression": "e^{i\\pi}+1=0"}, "plain_text": "e^{i\\pi}+1=0",
                "annotations": text_segment("x")["annotations"], "href": None}
    assert rich_text_to_markdown([bold, link]) == "**bold** [docs](https://example.com/docs)"
    assert rich_text_to_markdown([italic, code, equation]) == "~~*soft*~~`a|b`$e^{i\\pi}+1=0$"
    assert rich_text_to_markdown([]) == "" and rich_text_to_markdown(None) == ""


def test_nested_lists_number_items_and_indent_children():
    blocks = [
        {**block("numbered_list_item", "first", has_children=True),
         "children": [block("bulleted_list_item", "nested bullet"),
                      {**block("to_do", "nested task", checked=True)}]},
        block("numbered_list_item", "second"),
        block("paragraph", "between"),
        block("numbered_list_item", "restart"),
    ]
    markdown, _ = blocks_to_markdown(blocks)
    assert markdown == "1. first\n   - nested bullet\n   - [x] nested task\n2. second\n\nbetween\n\n1. restart"


def test_toggle_quote_and_table_without_header():
    table = {**block("table", None, has_children=True, table_width=2, has_column_header=False,
                     has_row_header=False),
             "children": [block("table_row", None, cells=[[text_segment("a|1")], [text_segment("b")]])]}
    toggle = {**block("toggle", "More", has_children=True), "children": [block("paragraph", "hidden detail")]}
    quote = {**block("quote", "Said", has_children=True), "children": [block("paragraph", "and more")]}
    markdown, _ = blocks_to_markdown([table, toggle, quote])
    assert "|  |  |\n|---|---|\n| a\\|1 | b |" in markdown
    assert "- More\n  hidden detail" in markdown
    assert "> Said\n>\n> and more" in markdown


def test_unknown_block_types_keep_their_text():
    markdown, skipped = blocks_to_markdown([block("meeting_notes", "Decisions we took")])
    assert markdown == "Decisions we took" and skipped == {"meeting_notes": 1}


def test_to_markdown_dispatches_the_stored_notion_document():
    content = json.dumps({"page": {"id": "x", "title": "Runbook", "url": "https://www.notion.so/x"},
                          "blocks": [load("retrieve_block_paragraph.json")]}).encode()
    markdown, title = to_markdown(content, NOTION_BLOCKS_TYPE)
    assert title == "Runbook" and markdown.startswith("# Runbook\n\n")
    assert markdown == "# Runbook\n\nText\n"
