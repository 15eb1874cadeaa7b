"""Source content to Markdown.

HTML goes through markdownify with ATX headings, fenced code blocks that keep their language, and tables
as pipe tables; scripts, styles and the <head> are dropped first so their text never reaches the index.
PDF, DOCX, JSON and CSV are handled by `transform.documents`, which `to_markdown` dispatches to by content type.
"""

from __future__ import annotations

import codecs
import re

from bs4 import BeautifulSoup
from markdownify import MarkdownConverter

from rag_sync_pipeline.transform.notion_blocks import NOTION_BLOCKS_TYPE, notion_document_to_markdown

HTML_TYPES = {"text/html", "application/xhtml+xml"}
MARKDOWN_TYPES = {"text/markdown", "text/x-markdown"}
TEXT_TYPES = {"text/plain"}
CONFLUENCE_STORAGE_TYPE = "application/vnd.atlassian.confluence.storage+xml"
LANGUAGE_CLASS = re.compile(r"^(?:language|lang|highlight-source|brush:?)-?(.+)$")
CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
MAX_INDENT_COLUMNS = 400
"""Deeper indentation than this (about 100 levels of nested lists) is refused: the chunker's Markdown
splitter takes quadratic time on such nesting (1,000 levels: minutes), and no real document nests so deep."""


class ConversionError(ValueError):
    """The content cannot be turned into Markdown; the message says why."""


def decode_text(content: bytes, content_type: str = "") -> str:
    """Text in the encoding its byte-order mark or the content type's `charset=` names, else UTF-8.

    A NUL byte in text that is not UTF-16/32 means binary content behind a text content type."""
    encoding = next((name for bom, name in BOMS if content.startswith(bom)), None)
    if encoding is None:
        match = CHARSET.search(content_type)
        encoding = match.group(1).lower() if match else "utf-8"
        if encoding in ("utf-8", "utf8"):
            encoding = "utf-8-sig"
        if b"\x00" in content and not encoding.startswith(("utf-16", "utf-32", "utf16", "utf32")):
            raise ConversionError("binary content (NUL bytes) where text was expected")
    try:
        return content.decode(encoding)
    except LookupError:
        raise ConversionError(f"unknown charset {encoding!r} in content type {content_type!r}") from None
    except UnicodeDecodeError as error:
        name = "UTF-8" if encoding == "utf-8-sig" else encoding
        raise ConversionError(f"invalid {name} at byte {error.start}") from None


def _code_language(element) -> str:
    for node in (element, element.find("code")):
        if node is None:
            continue
        for css_class in node.get("class") or []:
            match = LANGUAGE_CLASS.match(css_class)
            if match:
                return match.group(1)
        if node.get("data-lang"):
            return str(node["data-lang"])
    return ""


class _Converter(MarkdownConverter):
    def convert_pre(self, el, text, parent_tags):
        # markdownify's own fence loses nothing but the language when no callback is set; set it per block.
        self.options["code_language"] = _code_language(el)
        return super().convert_pre(el, text, parent_tags)


def html_to_markdown(html: str) -> tuple[str, str]:
    """Return (markdown, title) for an HTML page or fragment."""
    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for element in soup(["script", "style", "head", "noscript", "template"]):
        element.decompose()
    body = soup.body or soup
    markdown = _Converter(heading_style="ATX", bullets="-", escape_underscores=False, escape_asterisks=False,
                          escape_misc=False).convert_soup(body)
    return normalize_markdown(markdown), title


def normalize_markdown(markdown: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row, except inside code blocks."""
    kept: list[str] = []
    fence = ""
    for line in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        marker = line.lstrip()[:3]
        if marker in ("```", "~~~") and (not fence or marker == fence):
            fence = "" if fence else marker
        if not fence:
            line = line.rstrip()
            if not line and kept and not kept[-1]:
                continue
        kept.append(line)
    return "\n".join(kept).strip("\n").rstrip() + "\n"


def first_heading(markdown: str) -> str:
    """The first level-1 heading outside code fences, or ''."""
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and line.startswith("# "):
            return line[2:].strip().strip("#").strip()
    return ""


def check_nesting(markdown: str) -> None:
    """Refuse Markdown nested deeper than MAX_INDENT_COLUMNS (code blocks aside), before it reaches the chunker."""
    fence = ""
    for number, line in enumerate(markdown.split("\n"), 1):
        stripped = line.lstrip()
        if stripped[:3] in ("```", "~~~") and (not fence or stripped[:3] == fence):
            fence = "" if fence else stripped[:3]
        elif not fence and len(line) - len(stripped) > MAX_INDENT_COLUMNS:
            raise ConversionError(f"nested too deeply: line {number} is indented {len(line) - len(stripped)} "
                                  f"columns (the limit is {MAX_INDENT_COLUMNS}, about 100 levels of lists)")


def to_markdown(content: bytes, content_type: str) -> tuple[str, str]:
    """Convert a document's bytes to (markdown, title found in the content).

    Every failure is a ConversionError naming the cause; content with no text at all is one too."""
    try:
        markdown, title = _convert(content, content_type)
    except RecursionError:  # bs4 and markdownify recurse once per nested element
        raise ConversionError("nested too deeply to convert (elements inside elements beyond Python's "
                              "recursion limit)") from None
    if not markdown.strip():
        raise ConversionError("empty document: no text after conversion")
    check_nesting(markdown)
    return markdown, title


def _convert(content: bytes, content_type: str) -> tuple[str, str]:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type in HTML_TYPES:
        markdown, title = html_to_markdown(decode_text(content, content_type))
        return markdown, title or first_heading(markdown)
    if media_type == CONFLUENCE_STORAGE_TYPE:
        from rag_sync_pipeline.transform.confluence_storage import storage_to_markdown

        return storage_to_markdown(decode_text(content, content_type)), ""
    if media_type in MARKDOWN_TYPES or media_type in TEXT_TYPES:
        markdown = normalize_markdown(decode_text(content, content_type))
        return markdown, first_heading(markdown) if media_type in MARKDOWN_TYPES else ""
    if media_type == NOTION_BLOCKS_TYPE:
        try:
            markdown, title = notion_document_to_markdown(content)
        except (UnicodeDecodeError, ValueError, AttributeError, TypeError) as error:
            raise ConversionError(f"not a Notion block document: {error}") from None
        return normalize_markdown(markdown), title
    from rag_sync_pipeline.transform import documents  # PDF, DOCX, JSON, CSV; loads its parsers on first use

    if media_type == documents.PDF_TYPE:
        return documents.pdf_to_markdown(content)
    if media_type == documents.DOCX_TYPE:
        return documents.docx_to_markdown(content)
    if media_type in documents.JSON_TYPES:
        return documents.json_to_markdown(decode_text(content, content_type))
    if media_type in documents.CSV_TYPES or media_type in documents.TSV_TYPES:
        delimiter = "\t" if media_type in documents.TSV_TYPES else None
        return documents.csv_to_markdown(decode_text(content, content_type), delimiter)
    raise ConversionError(f"unsupported content type {content_type!r}")
