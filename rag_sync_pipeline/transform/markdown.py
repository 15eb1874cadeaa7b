"""Source content to Markdown.

HTML goes through markdownify with ATX headings, fenced code blocks that keep their language, and tables
as pipe tables; scripts, styles and the <head> are dropped first so their text never reaches the index.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup
from markdownify import MarkdownConverter

HTML_TYPES = {"text/html", "application/xhtml+xml"}
MARKDOWN_TYPES = {"text/markdown", "text/x-markdown"}
TEXT_TYPES = {"text/plain"}
CONFLUENCE_STORAGE_TYPE = "application/vnd.atlassian.confluence.storage+xml"
OFFICE_TYPES = {"application/pdf", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}
LANGUAGE_CLASS = re.compile(r"^(?:language|lang|highlight-source|brush:?)-?(.+)$")
BLANK_RUNS = re.compile(r"\n{3,}")


class ConversionError(ValueError):
    """The content cannot be turned into Markdown; the message says why."""


def decode_text(content: bytes) -> str:
    """UTF-8 (with or without BOM); a NUL byte means binary content behind a text content type."""
    if b"\x00" in content[:8192]:
        raise ConversionError("binary content (NUL bytes) where text was expected")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConversionError(f"invalid UTF-8 at byte {error.start}") from None


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
    lines = [line.rstrip() for line in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip() + "\n"


def first_heading(markdown: str) -> str:
    """The first level-1 heading outside code fences, or ''."""
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and line.startswith("# "):
            return line[2:].strip().strip("#").strip()
    return ""


def to_markdown(content: bytes, content_type: str) -> tuple[str, str]:
    """Convert a document's bytes to (markdown, title found in the content)."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type in HTML_TYPES:
        markdown, title = html_to_markdown(decode_text(content))
        return markdown, title or first_heading(markdown)
    if media_type == CONFLUENCE_STORAGE_TYPE:
        from rag_sync_pipeline.transform.confluence_storage import storage_to_markdown

        return storage_to_markdown(decode_text(content)), ""
    if media_type in OFFICE_TYPES:
        from rag_sync_pipeline.transform import documents

        try:
            text = documents.pdf_text(content) if media_type == documents.PDF_TYPE else documents.docx_text(content)
        except documents.DocumentConversionError as error:
            raise ConversionError(str(error)) from None
        markdown = normalize_markdown(text)
        return markdown, first_heading(markdown)
    if media_type in MARKDOWN_TYPES or media_type in TEXT_TYPES:
        markdown = normalize_markdown(decode_text(content))
        return markdown, first_heading(markdown) if media_type in MARKDOWN_TYPES else ""
    raise ConversionError(f"unsupported content type {content_type!r}")
