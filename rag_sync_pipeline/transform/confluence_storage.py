"""Confluence storage format (XHTML with `ac:` and `ri:` elements) to Markdown, and the references in it.

Storage format is not well-formed XML on its own (the `ac:` and `ri:` prefixes are never declared), so it is
read with an HTML parser that keeps prefixed names as they are and turns `<![CDATA[...]]>` into text. The
Confluence elements are first rewritten into the plain HTML they stand for, then the shared HTML converter
writes Markdown:

- code / noformat macros: fenced code with their language;
- info / note / warning / tip / panel macros: quotes labelled with the panel's kind (and title);
- expand macros: their title as a bold line, then their body;
- page, attachment and user links: their link text (or the page title / file name when there is none);
- images: their alt text or file name;
- layouts: their cells in reading order; task lists: `- [ ]` / `- [x]` items;
- Jira and status macros: the issue key / the status text;
- any other macro: its body text; parameters, placeholders and CDATA markers never reach the text.

Pure functions of a string: nothing here talks to the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, CData, NavigableString, Tag
from markdownify import MarkdownConverter

from rag_sync_pipeline.transform.markdown import normalize_markdown

STORAGE_CONTENT_TYPE = "application/vnd.atlassian.confluence.storage+xml"
CODE_MACROS = {"code", "noformat", "code-block"}
PANEL_MACROS = {"info": "Info", "note": "Note", "warning": "Warning", "tip": "Tip", "panel": "Panel",
                "success": "Success", "error": "Error"}
EXPAND_MACROS = {"expand", "ui-expand"}
MACRO_TAGS = ("ac:structured-macro", "ac:macro")
DROPPED_TAGS = ("ac:parameter", "ac:placeholder", "ac:emoticon", "ac:task-id", "ac:task-uuid",
                "ac:adf-fallback", "script", "style")
JIRA_KEY = re.compile(r"\b[A-Z][A-Z0-9_]{1,9}-[1-9][0-9]{0,6}\b")


@dataclass
class StorageReferences:
    """What a page points at, for filtering and citing: Jira issues, people, other pages and the web."""

    jira_keys: list[str] = field(default_factory=list)
    mentions: list[str] = field(default_factory=list)
    """User account ids (Cloud) or user keys / names (Server/Data Center)."""
    page_links: list[str] = field(default_factory=list)
    """Titles of the linked pages (`SPACE:Title` when the link names another space)."""
    links: list[str] = field(default_factory=list)
    """External URLs."""
    attachments: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"jira_keys": self.jira_keys, "mentions": self.mentions, "page_links": self.page_links,
                "links": self.links, "attachments": self.attachments}


def parse_storage(storage: str) -> BeautifulSoup:
    soup = BeautifulSoup(storage, "html.parser")
    # CDATA (code bodies, link texts) becomes ordinary text, so no converter ever prints its markers.
    for node in list(soup.find_all(string=lambda s: isinstance(s, CData))):
        node.replace_with(NavigableString(str(node)))
    return soup


def _name(tag: Tag) -> str:
    return (tag.get("ac:name") or "").strip().lower()


def _parameters(macro: Tag) -> dict[str, str]:
    values = {}
    for parameter in macro.find_all("ac:parameter", recursive=False):
        values[(parameter.get("ac:name") or "").strip().lower()] = parameter.get_text("", strip=True)
    return values


def _body(macro: Tag) -> Tag | None:
    for child in macro.find_all(("ac:rich-text-body", "ac:plain-text-body"), recursive=False):
        return child
    return None


def _new(soup: BeautifulSoup, name: str, text: str | None = None, **attrs: str) -> Tag:
    tag = soup.new_tag(name, attrs=attrs)
    if text is not None:
        tag.string = text
    return tag


def _move_children(source: Tag | None, target: Tag) -> None:
    if source is None:
        return
    for child in list(source.contents):
        target.append(child.extract())


def _rewrite_macro(soup: BeautifulSoup, macro: Tag) -> None:
    name = _name(macro)
    parameters = _parameters(macro)
    body = _body(macro)
    if name in CODE_MACROS:
        pre = _new(soup, "pre")
        code = _new(soup, "code", body.get_text() if body else "", **{"data-language": parameters.get("language", "")})
        pre.append(code)
        macro.replace_with(pre)
    elif name in PANEL_MACROS:
        quote = _new(soup, "blockquote")
        label = PANEL_MACROS[name]
        if parameters.get("title"):
            label = f"{label}: {parameters['title']}"
        heading = _new(soup, "p")
        heading.append(_new(soup, "strong", f"{label}:" if not parameters.get("title") else label))
        quote.append(heading)
        _move_children(body, quote)
        macro.replace_with(quote)
    elif name in EXPAND_MACROS:
        block = _new(soup, "div")
        title = parameters.get("title") or "Details"
        heading = _new(soup, "p")
        heading.append(_new(soup, "strong", title))
        block.append(heading)
        _move_children(body, block)
        macro.replace_with(block)
    elif name == "jira":
        key = parameters.get("key", "")
        macro.replace_with(NavigableString(key) if JIRA_KEY.fullmatch(key) else NavigableString(""))
    elif name == "status":
        macro.replace_with(NavigableString(f"[{parameters['title']}]") if parameters.get("title") else "")
    elif body is not None and body.name == "ac:plain-text-body":
        # Unknown macro with a plain body (e.g. html, sql): its text, never its markup.
        text = BeautifulSoup(body.get_text(), "html.parser").get_text(" ")
        paragraph = _new(soup, "p", text)
        macro.replace_with(paragraph)
    else:
        block = _new(soup, "div")
        _move_children(body, block)
        macro.replace_with(block)


def _link_text(link: Tag) -> str:
    for body_name in ("ac:link-body", "ac:plain-text-link-body"):
        body = link.find(body_name)
        if body is not None and body.get_text(strip=True):
            return body.get_text(" ", strip=True)
    attachment = link.find("ri:attachment")  # before pages: an attachment may name the page it is on
    if attachment is not None:
        return attachment.get("ri:filename", "")
    page = link.find(("ri:page", "ri:blog-post"))
    if page is not None:
        return page.get("ri:content-title", "")
    user = link.find("ri:user")
    if user is not None:
        name = user.get("ri:username") or ""
        return f"@{name}" if name else ""
    if link.get("ac:anchor"):
        return link["ac:anchor"]
    return ""


def _rewrite_link(soup: BeautifulSoup, link: Tag) -> None:
    text = _link_text(link)
    link.replace_with(NavigableString(text))


def _rewrite_image(soup: BeautifulSoup, image: Tag) -> None:
    text = image.get("ac:alt") or image.get("ac:title") or ""
    if not text:
        attachment = image.find("ri:attachment")
        url = image.find("ri:url")
        if attachment is not None:
            text = attachment.get("ri:filename", "")
        elif url is not None:
            text = url.get("ri:value", "").rsplit("/", 1)[-1]
    image.replace_with(NavigableString(f"[image: {text}]") if text else NavigableString(""))


def _rewrite_task_list(soup: BeautifulSoup, task_list: Tag) -> None:
    items = _new(soup, "ul")
    for task in task_list.find_all("ac:task", recursive=False):
        status = task.find("ac:task-status")
        done = status is not None and status.get_text(strip=True).lower() == "complete"
        item = _new(soup, "li", "[x] " if done else "[ ] ")
        _move_children(task.find("ac:task-body"), item)
        items.append(item)
    task_list.replace_with(items)


def storage_to_html(storage: str) -> BeautifulSoup:
    """The storage document rewritten as plain HTML (innermost constructs first, so nesting works)."""
    soup = parse_storage(storage)
    for tag in soup.find_all(["ac:task-list"])[::-1]:
        _rewrite_task_list(soup, tag)
    for macro in soup.find_all(MACRO_TAGS)[::-1]:
        _rewrite_macro(soup, macro)
    for link in soup.find_all("ac:link")[::-1]:
        _rewrite_link(soup, link)
    for image in soup.find_all("ac:image")[::-1]:
        _rewrite_image(soup, image)
    for time in soup.find_all("time"):
        time.replace_with(NavigableString(time.get("datetime") or time.get_text()))
    for tag in soup.find_all(DROPPED_TAGS):
        tag.decompose()
    # Layouts, inline comment markers and any other Confluence element: their content, in reading order.
    for tag in soup.find_all(lambda t: ":" in t.name):
        if tag.name in ("ac:layout-section", "ac:layout-cell", "ac:layout"):
            tag.name = "div"
        else:
            tag.unwrap()
    return soup


def storage_to_markdown(storage: str) -> str:
    soup = storage_to_html(storage)
    converter = MarkdownConverter(heading_style="ATX", bullets="-", escape_underscores=False,
                                  escape_asterisks=False, escape_misc=False,
                                  code_language_callback=lambda el: el.get("data-language") or _child_language(el))
    return normalize_markdown(converter.convert_soup(soup))


def _child_language(element: Tag) -> str:
    code = element.find("code")
    return code.get("data-language", "") if code is not None else ""


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def extract_references(storage: str) -> StorageReferences:
    """Jira issue keys, user mentions, page and web links and attachments named in a storage document."""
    soup = parse_storage(storage)
    jira = []
    for macro in soup.find_all(MACRO_TAGS):
        if _name(macro) == "jira":
            jira.append(_parameters(macro).get("key", ""))
    for tag in soup.find_all(DROPPED_TAGS):
        tag.decompose()
    jira.extend(JIRA_KEY.findall(soup.get_text(" ")))
    mentions = [u.get("ri:account-id") or u.get("ri:userkey") or u.get("ri:username") or ""
                for u in soup.find_all("ri:user")]
    pages = []
    for page in soup.find_all(("ri:page", "ri:blog-post")):
        if page.find_parent("ac:link") is None or not page.get("ri:content-title"):
            continue
        space = page.get("ri:space-key")
        pages.append(f"{space}:{page['ri:content-title']}" if space else page["ri:content-title"])
    links = [a.get("href", "") for a in soup.find_all("a") if a.get("href", "").startswith(("http://", "https://"))]
    links += [u.get("ri:value", "") for u in soup.find_all("ri:url")]
    attachments = [a.get("ri:filename", "") for a in soup.find_all("ri:attachment")]
    return StorageReferences(jira_keys=_unique(jira), mentions=_unique(mentions), page_links=_unique(pages),
                             links=_unique(links), attachments=_unique(attachments))
