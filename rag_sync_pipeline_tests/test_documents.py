"""PDF, DOCX, JSON and CSV through `to_markdown`, on files made here by real writers."""

import pytest

from rag_sync_pipeline.transform.documents import DOCX_TYPE, MAX_TABLE_ROWS
from rag_sync_pipeline.transform.markdown import ConversionError, to_markdown
from rag_sync_pipeline_tests.documents_support import docx_bytes, pdf_bytes


def test_pdf_text_of_every_page_in_order_with_title_from_document_info():
    pdf = pdf_bytes([["Quarterly report (Q3)", "Revenue grew 12 percent."], ["Churn fell to 2 percent."]],
                    title="Q3 report")
    markdown, title = to_markdown(pdf, "application/pdf")
    assert title == "Q3 report"
    assert markdown.index("Revenue grew 12 percent.") < markdown.index("Churn fell to 2 percent.")
    assert "Quarterly report (Q3)" in markdown


@pytest.mark.parametrize("content, cause", [
    (b"%PDF-1.7\n1 0 obj << /Type /Catalog", "unreadable PDF"),
    (b"<html>not a pdf</html>", "not a PDF: no %PDF- header"),
    (pdf_bytes([[]]), "no text layer"),
])
def test_unusable_pdf_is_a_conversion_error_naming_the_cause(content, cause):
    with pytest.raises(ConversionError, match=cause):
        to_markdown(content, "application/pdf")


def test_truncated_pdf_is_a_conversion_error():
    pdf = pdf_bytes([["Some text that will be cut off."]])
    with pytest.raises(ConversionError, match="PDF"):
        to_markdown(pdf[: len(pdf) // 3], "application/pdf")


def test_docx_headings_become_markdown_headings_lists_stay_tight_and_tables_become_pipe_tables():
    markdown, title = to_markdown(docx_bytes(title="Ingest incident"), DOCX_TYPE)
    assert title == "Ingest incident"
    assert markdown.startswith("# Incident review\n")
    assert "\n## Timeline\n" in markdown and "\n## Owners\n" in markdown
    assert "- Alert fired at 09:12 UTC\n- Rollback finished at 09:52 UTC" in markdown
    assert "| Team | Owner |\n| --- | --- |\n| Ingest | Ana \\| Bo |\n| SRE | Chen |" in markdown
    assert markdown.index("| SRE | Chen |") < markdown.index("Follow-ups are tracked in OPS-1234.")


def test_docx_without_title_property_takes_its_first_heading():
    _, title = to_markdown(docx_bytes(title=""), DOCX_TYPE)
    assert title == "Incident review"


def test_corrupt_docx_is_a_conversion_error():
    with pytest.raises(ConversionError, match="unreadable DOCX: BadZipFile"):
        to_markdown(b"PK\x03\x04 this zip ends here", DOCX_TYPE)


def test_json_is_pretty_printed_in_a_json_fence():
    markdown, title = to_markdown('{"team": "Zürich", "oncall": ["ana", "bo"]}'.encode(), "application/json")
    assert title == ""
    assert markdown == '```json\n{\n  "team": "Zürich",\n  "oncall": [\n    "ana",\n    "bo"\n  ]\n}\n```\n'


def test_invalid_json_names_the_position():
    with pytest.raises(ConversionError, match="invalid JSON: .*line 1 column 9"):
        to_markdown(b'{"a": 1,', "application/json")


def test_csv_becomes_a_pipe_table_with_the_delimiter_sniffed():
    markdown, _ = to_markdown(b"service;owner;tier\ningest;ana;1\nbilling;bo|chen\n", "text/csv")
    assert markdown == ("| service | owner | tier |\n| --- | --- | --- |\n| ingest | ana | 1 |\n"
                        "| billing | bo\\|chen |  |\n")


def test_tsv_uses_tabs():
    markdown, _ = to_markdown(b"a b\tc\n1 2\t3\n", "text/tab-separated-values")
    assert markdown.splitlines()[0] == "| a b | c |"


def test_long_csv_is_capped_and_says_how_many_rows_were_left_out():
    rows = "\n".join(f"row{i},{i}" for i in range(MAX_TABLE_ROWS + 25))
    markdown, _ = to_markdown(f"name,value\n{rows}\n".encode(), "text/csv")
    assert f"| row{MAX_TABLE_ROWS - 1} | {MAX_TABLE_ROWS - 1} |" in markdown
    assert f"row{MAX_TABLE_ROWS}," not in markdown and f"| row{MAX_TABLE_ROWS} |" not in markdown
    assert markdown.rstrip().endswith("(25 more rows not shown)")


def test_docx_without_text_is_a_conversion_error():
    import io

    import docx

    out = io.BytesIO()
    docx.Document().save(out)
    with pytest.raises(ConversionError, match="DOCX has no text"):
        to_markdown(out.getvalue(), DOCX_TYPE)
