import pytest

from rag_sync_pipeline.transform.markdown import ConversionError, first_heading, to_markdown


def test_html_keeps_headings_lists_tables_links_and_code_language():
    html = b"""<html><head><title>Deploy guide</title><style>p{color:red}</style>
    <script>var secret = 1;</script></head><body>
    <h1>Deploy</h1><h2>Steps</h2>
    <ol><li>Build</li><li>Ship<ul><li>canary first</li></ul></li></ol>
    <table><tr><th>Env</th><th>Region</th></tr><tr><td>prod</td><td>eu-west-1</td></tr></table>
    <p>See <a href="https://example.com/runbook">the runbook</a>.</p>
    <pre><code class="language-bash">kubectl rollout status deploy/api
</code></pre></body></html>"""
    markdown, title = to_markdown(html, "text/html; charset=utf-8")
    assert title == "Deploy guide"
    assert "# Deploy\n" in markdown and "## Steps" in markdown
    assert "1. Build" in markdown and "canary first" in markdown
    assert "| Env | Region |" in markdown and "| prod | eu-west-1 |" in markdown
    assert "[the runbook](https://example.com/runbook)" in markdown
    assert "```bash\nkubectl rollout status deploy/api\n```" in markdown
    assert "secret" not in markdown and "color:red" not in markdown


def test_markdown_passes_through_with_title_from_first_h1_outside_code():
    source = "```python\n# not the title\n```\n\n# Real title\n\nBody.\r\n"
    markdown, title = to_markdown(source.encode(), "text/markdown")
    assert title == "Real title"
    assert "\r" not in markdown


def test_plain_text_has_no_title_and_keeps_text():
    markdown, title = to_markdown("Zürich office – opens 9:00\n".encode(), "text/plain")
    assert title == "" and "Zürich office – opens 9:00" in markdown


@pytest.mark.parametrize("content, content_type, message", [
    (b"\x7fELF\x02\x01\x01\x00\x00bad", "text/plain", "binary content"),  # FF FE would be a UTF-16 BOM
    (b"caf\xe9", "text/markdown", "invalid UTF-8 at byte 3"),
    (b"PK\x03\x04", "application/zip", "unsupported content type"),
    (b"%PDF-1.7", "application/pdf", "unreadable PDF"),
    (b"\x89PNG", "image/png", "unsupported content type"),
])
def test_bad_input_raises_conversion_error_with_cause(content, content_type, message):
    with pytest.raises(ConversionError, match=message):
        to_markdown(content, content_type)


def test_unclosed_html_still_converts():
    markdown, _ = to_markdown(b"<h2>Half<p>open <b>bold", "text/html")
    assert "## Half" in markdown and "**bold**" in markdown


def test_first_heading_ignores_deeper_headings():
    assert first_heading("## Sub\n\n# Top\n") == "Top"
    assert first_heading("no headings") == ""


def test_blank_lines_collapse_outside_code_blocks_only():
    from rag_sync_pipeline.transform.markdown import normalize_markdown

    source = "# T  \r\n\r\n\r\n\r\nText\n\n```python\ndef a():\n    pass\n\n\n\ndef b():  \n    pass\n```\n\n\n\nEnd\n"
    assert normalize_markdown(source) == (
        "# T\n\nText\n\n```python\ndef a():\n    pass\n\n\n\ndef b():  \n    pass\n```\n\nEnd\n")


@pytest.mark.parametrize("content, content_type", [
    ("Grüße aus Zürich".encode("latin-1"), "text/plain; charset=iso-8859-1"),
    ("Grüße aus Zürich".encode("cp1252"), 'text/html; charset="windows-1252"'),
    ("Grüße aus Zürich".encode("utf-16-le"), "text/plain; charset=UTF-16LE"),  # NUL bytes, yet text
    ("Grüße aus Zürich".encode("utf-16"), "text/plain"),  # the byte-order mark says it
    ("Grüße aus Zürich".encode("utf-32"), "text/markdown"),
])
def test_text_is_decoded_as_its_charset_or_byte_order_mark_says(content, content_type):
    markdown, _ = to_markdown(content, content_type)
    assert "Grüße aus Zürich" in markdown


def test_unknown_charset_and_empty_text_are_conversion_errors():
    with pytest.raises(ConversionError, match="unknown charset 'klingon'"):
        to_markdown(b"text", "text/plain; charset=klingon")
    with pytest.raises(ConversionError, match="empty document"):
        to_markdown(b"<html><head><title>Only a title</title></head><body> </body></html>", "text/html")
