"""Binary and structured documents to Markdown: PDF, DOCX, JSON and CSV.

Pure functions from content to (markdown, title), called by `to_markdown` for these content types. Each turns
its parser's failure into a `ConversionError` that names the cause, so the markdown stage records the one bad
document and the run goes on. The PDF and DOCX parsers catch every Exception on purpose: on damaged input
pypdf, python-docx and lxml raise whatever their code hits (KeyError, struct.error, XMLSyntaxError, ...), and
a file from a bucket anyone may write to must not fail the run. The parsers (pypdf, python-docx) are
imported here only, and this module is imported by `to_markdown` only when such a document shows up, so
HTML-only runs never load them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence

from rag_sync_pipeline.transform.markdown import ConversionError, normalize_markdown

PDF_TYPE = "application/pdf"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
JSON_TYPES = {"application/json", "text/json"}
CSV_TYPES = {"text/csv", "application/csv"}
TSV_TYPES = {"text/tab-separated-values"}
CSV_DELIMITERS = (",", ";", "\t", "|")
MAX_TABLE_ROWS = 1000
"""CSV rows kept per document: a spreadsheet dump of a million rows is data, not prose to retrieve."""
HEADING_STYLE = re.compile(r"^heading\s*([1-6])$")
LIST_STYLES = {"list bullet": "- ", "list number": "1. ", "list paragraph": "- "}


def pipe_table(rows: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table whose first row is the header; ragged rows are padded, pipes escaped."""
    width = max((len(row) for row in rows), default=0)
    if width == 0:
        return ""

    def cell(text: str) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    def line(row: Sequence[str]) -> str:
        cells = [cell(c) for c in row] + [""] * (width - len(row))
        return "| " + " | ".join(cells) + " |"

    header, *body = rows
    return "\n".join([line(header), "| " + " | ".join(["---"] * width) + " |", *(line(r) for r in body)])


# -- PDF -------------------------------------------------------------------------------------------------

def pdf_to_markdown(content: bytes) -> tuple[str, str]:
    """The text layer of every page, pages separated by blank lines; title from the document info.

    pypdf recovers what it can from damaged files; what it cannot read at all, encrypted files without an
    empty user password and scanned PDFs without a text layer are conversion errors, not empty documents.
    """
    from pypdf import PdfReader

    if b"%PDF-" not in content[:1024]:
        raise ConversionError("not a PDF: no %PDF- header in the first 1024 bytes")
    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ConversionError("encrypted PDF (a password is needed to read it)")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str((reader.metadata or {}).get("/Title") or "").strip()
    except ConversionError:
        raise
    except Exception as error:  # untrusted input: see the module docstring
        raise ConversionError(f"unreadable PDF: {type(error).__name__}: {error}") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise ConversionError(f"PDF of {len(pages)} page(s) has no text layer (scanned images need OCR)")
    return normalize_markdown(text), title


# -- DOCX ------------------------------------------------------------------------------------------------

def _docx_blocks(document) -> Iterable[str]:
    """Markdown blocks in document order; consecutive list items form one block, so the list stays tight."""
    from docx.table import Table

    items: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            line = pipe_table([[cell.text for cell in row.cells] for row in block.rows])
        else:
            text = block.text.strip()
            style = ((block.style.name if block.style is not None else "") or "").lower()
            if not text:
                continue
            if style in LIST_STYLES:
                items.append(LIST_STYLES[style] + text)
                continue
            heading = HEADING_STYLE.match(style)
            if style == "title":
                line = f"# {text}"
            elif heading:
                line = f"{'#' * int(heading.group(1))} {text}"
            else:
                line = text
        if items:
            yield "\n".join(items)
            items = []
        if line:
            yield line
    if items:
        yield "\n".join(items)


def docx_to_markdown(content: bytes) -> tuple[str, str]:
    """Paragraphs and tables in document order: Word headings become Markdown headings, tables pipe tables.

    The title is the document's core `title` property, else its Title-styled or first level-1 heading.
    """
    import docx

    try:
        document = docx.Document(io.BytesIO(content))
        blocks = list(_docx_blocks(document))
        title = (document.core_properties.title or "").strip()
    except Exception as error:  # untrusted input: see the module docstring
        raise ConversionError(f"unreadable DOCX: {type(error).__name__}: {error}") from None
    if not blocks:
        raise ConversionError("DOCX has no text (only images or empty paragraphs)")
    markdown = normalize_markdown("\n\n".join(blocks))
    if not title:
        title = next((b[2:].strip() for b in blocks if b.startswith("# ")), "")
    return markdown, title


# -- JSON and CSV: structured text, kept readable ------------------------------------------------------

def json_to_markdown(text: str) -> tuple[str, str]:
    """Pretty-printed in a json fence, so the chunker keeps it together and readers see the structure."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConversionError(f"invalid JSON: {error}") from None
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    return f"```json\n{pretty}\n```\n", ""


def csv_to_markdown(text: str, delimiter: str | None = None) -> tuple[str, str]:
    """A pipe table of the first MAX_TABLE_ROWS rows (header first), with a note of how many were left out.

    The delimiter, unless given, is whichever of comma, semicolon, tab and pipe the header line holds most
    of (csv.Sniffer guesses wrong on ragged rows, which real exports have); a file that is not a table at
    all still comes out as a one-column table, since the text is what matters.
    """
    if delimiter is None:
        header = next((line for line in text.splitlines() if line.strip()), "")
        delimiter = max(CSV_DELIMITERS, key=header.count)  # ties go to the earlier, comma first
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]
    except csv.Error as error:
        raise ConversionError(f"invalid CSV: {error}") from None
    if not rows:
        raise ConversionError("CSV has no rows")
    kept = rows[:MAX_TABLE_ROWS + 1]  # the header plus MAX_TABLE_ROWS data rows
    markdown = pipe_table(kept)
    left_out = len(rows) - len(kept)
    if left_out:
        markdown += f"\n\n({left_out} more rows not shown)"
    return markdown + "\n", ""
