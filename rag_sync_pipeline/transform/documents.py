"""Text of office documents (PDF, DOCX) for attachments, as Markdown paragraphs. Pure functions of bytes."""

from __future__ import annotations

import io
import re
import zipfile
from xml.etree import ElementTree

PDF_TYPE = "application/pdf"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
WORD_NAMESPACE = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
SPACES = re.compile(r"[ \t]+")


class DocumentConversionError(ValueError):
    """The bytes are not a readable document of the type they claim."""


def pdf_text(content: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(content))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as error:
        raise DocumentConversionError(f"unreadable PDF: {error}") from None
    return "\n\n".join(SPACES.sub(" ", text).strip() for text in pages if text.strip())


def docx_text(content: bytes) -> str:
    """Paragraph text from word/document.xml; headings become Markdown headings."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            root = ElementTree.fromstring(archive.read("word/document.xml"))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as error:
        raise DocumentConversionError(f"unreadable DOCX: {error}") from None
    paragraphs = []
    for paragraph in root.iter(f"{WORD_NAMESPACE}p"):
        text = "".join(node.text or "" for node in paragraph.iter(f"{WORD_NAMESPACE}t")).strip()
        if not text:
            continue
        style = paragraph.find(f"{WORD_NAMESPACE}pPr/{WORD_NAMESPACE}pStyle")
        level = (style.get(f"{WORD_NAMESPACE}val") or "") if style is not None else ""
        match = re.fullmatch(r"Heading([1-6])", level)
        paragraphs.append(f"{'#' * int(match.group(1))} {text}" if match else text)
    return "\n\n".join(paragraphs)
