"""Notion block trees to Markdown: a pure function of the JSON the Notion source stores.

The raw stage stores a page as `{"page": {"id", "title", "url"}, "blocks": [...]}` with the content type
`application/vnd.notion.blocks+json`; each block is Notion's own block object with its children (already
fetched, synced copies resolved to their original) under `children`. The page title becomes the `#` heading
and the page's own headings move down one level, so heading paths read `Page > Heading`.

Every block type of the Notion API has a rendering: text blocks keep their rich text (bold, italic, code,
strikethrough, links, mentions, inline equations); lists nest; toggles and callouts keep their children;
tables become pipe tables; columns are read left to right; child pages and databases, bookmarks, embeds and
link previews become links; images, files, videos, audio and PDFs become their caption or file name (Notion's
file URLs are pre-signed and expire within the hour, so they are never a link target). `unsupported` blocks
and pure navigation (table of contents, breadcrumb) produce no text; unknown future types fall back to their
rich text, if any.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

NOTION_BLOCKS_TYPE = "application/vnd.notion.blocks+json"
HEADING_TYPES = {"heading_1": 1, "heading_2": 2, "heading_3": 3}
LIST_TYPES = {"bulleted_list_item", "numbered_list_item", "to_do"}
MEDIA_TYPES = {"image": "Image", "file": "File", "video": "Video", "audio": "Audio", "pdf": "PDF"}
LINK_TYPES = {"bookmark", "embed", "link_preview"}
SILENT_TYPES = {"unsupported", "table_of_contents", "breadcrumb"}


def notion_url(object_id: str) -> str:
    return f"https://www.notion.so/{object_id.replace('-', '')}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _wrap(text: str, marker: str) -> str:
    """Put a Markdown marker around text, keeping surrounding whitespace outside it (`** a **` is no bold)."""
    stripped = text.strip()
    if not stripped:
        return text
    start = text[: len(text) - len(text.lstrip())]
    end = text[len(text.rstrip()):]
    return f"{start}{marker}{stripped}{marker}{end}"


def rich_text_to_markdown(segments: Iterable[dict[str, Any]] | None) -> str:
    """Notion rich text (a list of segments) to inline Markdown."""
    parts = []
    for segment in segments or []:
        kind = segment.get("type")
        plain = segment.get("plain_text")
        if kind == "equation":
            expression = (segment.get("equation") or {}).get("expression") or plain or ""
            parts.append(f"${expression}$")
            continue
        if plain is None:
            plain = ((segment.get("text") or {}).get("content")) or ""
        annotations = segment.get("annotations") or {}
        href = segment.get("href")
        if kind == "text":
            link = (segment.get("text") or {}).get("link") or {}
            href = link.get("url") or href
        elif kind == "mention":
            mention = segment.get("mention") or {}
            target = mention.get(mention.get("type") or "") or {}
            if mention.get("type") in {"page", "database"} and not href and target.get("id"):
                href = notion_url(target["id"])
            elif mention.get("type") == "link_preview" and not href:
                href = target.get("url")
        text = plain
        if annotations.get("code"):
            text = _wrap(text, "`")
        else:
            if annotations.get("bold"):
                text = _wrap(text, "**")
            if annotations.get("italic"):
                text = _wrap(text, "*")
            if annotations.get("strikethrough"):
                text = _wrap(text, "~~")
        if href and text.strip():
            text = f"[{text}]({href})"
        parts.append(text)
    return "".join(parts)


def plain_text(segments: Iterable[dict[str, Any]] | None) -> str:
    return "".join(s.get("plain_text") or "" for s in segments or [])


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


def _media_name(payload: dict[str, Any]) -> str:
    caption = plain_text(payload.get("caption"))
    if caption.strip():
        return caption.strip()
    if payload.get("name"):
        return str(payload["name"])
    url = (payload.get(payload.get("type") or "") or {}).get("url") or ""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) if url else ""
    return name or "untitled"


class _Renderer:
    def __init__(self) -> None:
        self.skipped: dict[str, int] = {}

    def blocks(self, blocks: list[dict[str, Any]]) -> str:
        """Render sibling blocks; consecutive list items form one list (numbered ones counted)."""
        out: list[str] = []
        number = 0
        previous_list: str | None = None
        for block in blocks:
            kind = block.get("type") or ""
            number = number + 1 if kind == "numbered_list_item" and previous_list == kind else 1
            rendered = self.block(block, number)
            previous_list = kind if kind in LIST_TYPES else None
            if not rendered:
                continue
            if out and kind in LIST_TYPES and out[-1][1] in LIST_TYPES:
                out[-1] = (out[-1][0] + "\n" + rendered, kind)
            else:
                out.append((rendered, kind))
        return "\n\n".join(text for text, _ in out)

    def children(self, block: dict[str, Any]) -> str:
        return self.blocks(block.get("children") or [])

    def block(self, block: dict[str, Any], number: int = 1) -> str:
        kind = block.get("type") or ""
        payload = block.get(kind) or {}
        text = rich_text_to_markdown(payload.get("rich_text"))
        if kind == "paragraph":
            return "\n\n".join(p for p in (text, self.children(block)) if p)
        if kind in HEADING_TYPES:
            heading = f"{'#' * (HEADING_TYPES[kind] + 1)} {text}" if text.strip() else ""
            return "\n\n".join(p for p in (heading, self.children(block)) if p)
        if kind in LIST_TYPES:
            if kind == "to_do":
                marker = f"- [{'x' if payload.get('checked') else ' '}]"
            else:
                marker = f"{number}." if kind == "numbered_list_item" else "-"
            item = f"{marker} {text}".rstrip()
            nested = self.children(block)
            return item + ("\n" + _indent(nested, " " * (len(marker) + 1)) if nested else "")
        if kind == "toggle":
            nested = self.children(block)
            return f"- {text}".rstrip() + ("\n" + _indent(nested, "  ") if nested else "")
        if kind in {"quote", "callout"}:
            if kind == "callout":
                icon = payload.get("icon") or {}
                emoji = icon.get("emoji") if icon.get("type") == "emoji" else ""
                text = f"{emoji} {text}".strip() if emoji else text
            body = "\n\n".join(p for p in (text, self.children(block)) if p)
            return _indent(body, "> ").replace("\n\n", "\n>\n") if body else ""
        if kind == "code":
            code = plain_text(payload.get("rich_text"))
            fence = "````" if "```" in code else "```"
            language = (payload.get("language") or "").replace("plain text", "")
            caption = rich_text_to_markdown(payload.get("caption"))
            rendered = f"{fence}{language}\n{code}\n{fence}"
            return rendered + (f"\n\n{caption}" if caption else "")
        if kind == "equation":
            return f"$$\n{payload.get('expression') or ''}\n$$"
        if kind == "divider":
            return "---"
        if kind == "table":
            return self.table(block)
        if kind in {"column_list", "column", "synced_block", "template"}:
            return "\n\n".join(p for p in (text, self.children(block)) if p)
        if kind in {"child_page", "child_database"}:
            title = payload.get("title") or ("Untitled page" if kind == "child_page" else "Untitled database")
            return f"[{_escape(title)}]({notion_url(block.get('id') or '')})"
        if kind == "link_to_page":
            target = payload.get(payload.get("type") or "") or ""
            return f"[Linked page]({notion_url(target)})" if target else ""
        if kind in LINK_TYPES:
            url = payload.get("url") or ""
            label = plain_text(payload.get("caption")).strip() or url
            return f"[{_escape(label)}]({url})" if url else ""
        if kind in MEDIA_TYPES:
            name = _media_name(payload)
            source = payload.get("type")
            url = (payload.get("external") or {}).get("url") if source == "external" else None
            label = f"{MEDIA_TYPES[kind]}: {_escape(name)}"
            return f"[{label}]({url})" if url else label
        if kind in SILENT_TYPES:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return ""
        # A type this converter does not know yet: keep its text and children rather than lose them.
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        return "\n\n".join(p for p in (text, self.children(block)) if p)

    def table(self, block: dict[str, Any]) -> str:
        rows = [r for r in block.get("children") or [] if r.get("type") == "table_row"]
        if not rows:
            return ""
        width = max((block.get("table") or {}).get("table_width") or 0,
                    *(len((r.get("table_row") or {}).get("cells") or []) for r in rows))

        def cells(row: dict[str, Any]) -> list[str]:
            values = [rich_text_to_markdown(c).replace("|", "\\|").replace("\n", " ").strip()
                      for c in (row.get("table_row") or {}).get("cells") or []]
            return values + [""] * (width - len(values))

        lines = [cells(r) for r in rows]
        has_header = (block.get("table") or {}).get("has_column_header")
        header = lines.pop(0) if has_header else [""] * width
        table = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * width) + "|"]
        table += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(table)


def blocks_to_markdown(blocks: list[dict[str, Any]]) -> tuple[str, dict[str, int]]:
    """Markdown for a list of blocks, and how many blocks of each type produced no text of their own."""
    renderer = _Renderer()
    return renderer.blocks(blocks), renderer.skipped


def page_to_markdown(title: str, blocks: list[dict[str, Any]]) -> str:
    body, _ = blocks_to_markdown(blocks)
    heading = f"# {title.strip()}" if title.strip() else ""
    text = "\n\n".join(p for p in (heading, body) if p)
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip() + "\n"


def notion_document_to_markdown(content: bytes) -> tuple[str, str]:
    """(markdown, title) for the JSON document the Notion source stores."""
    document = json.loads(content.decode("utf-8"))
    page = document.get("page") or {}
    title = page.get("title") or ""
    return page_to_markdown(title, document.get("blocks") or []), title
