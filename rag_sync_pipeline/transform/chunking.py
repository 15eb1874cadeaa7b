"""Markdown to chunks that respect its structure and fit the embedding model's token window.

The document is cut into sections at its headings (found by markdown-it, so a `#` inside a code block is no
heading). A section that fits the window is one chunk, and a parent section absorbs its following
subsections while they fit; a section that does not fit is split by semantic-text-splitter's MarkdownSplitter
(paragraphs, lists and code blocks before sentences before words), counting tokens with the model's own
tokenizer, and each piece repeats the section's heading line so it still says what it is about.
Every chunk carries its heading path.
"""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt
from semantic_text_splitter import MarkdownSplitter
from tokenizers import Tokenizer

SPECIAL_TOKENS = 2  # [CLS] and [SEP] count against max_seq_length but not against the splitter's capacity
_PARSER = MarkdownIt("commonmark").enable("table")  # reusable: building one per document cost ~0.5 ms


@dataclass(frozen=True)
class Chunk:
    text: str
    heading_path: tuple[str, ...]
    token_count: int


@dataclass(frozen=True)
class _Section:
    heading_path: tuple[str, ...]
    heading_line: str
    body: str


def _sections(markdown: str) -> list[_Section]:
    lines = markdown.split("\n")
    tokens = _PARSER.parse(markdown)
    headings = []  # (start line, end line, level, title)
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            title = tokens[index + 1].content.strip()
            headings.append((token.map[0], token.map[1], int(token.tag[1]), title))

    sections = []
    stack: list[tuple[int, str]] = []
    first_start = headings[0][0] if headings else len(lines)
    preamble = "\n".join(lines[:first_start]).strip()
    if preamble:
        sections.append(_Section((), "", preamble))
    for position, (start, end, level, title) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        next_start = headings[position + 1][0] if position + 1 < len(headings) else len(lines)
        heading_line = "\n".join(lines[start:end]).strip()
        body = "\n".join(lines[end:next_start]).strip()
        sections.append(_Section(tuple(t for _, t in stack), heading_line, body))
    return sections


class MarkdownChunker:
    def __init__(self, tokenizer: Tokenizer, max_tokens: int) -> None:
        if max_tokens <= SPECIAL_TOKENS + 16:
            raise ValueError(f"max_tokens={max_tokens} leaves no room for text")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.capacity = max_tokens - SPECIAL_TOKENS
        self._splitters: dict[int, MarkdownSplitter] = {}

    def count_tokens(self, text: str) -> int:
        """Tokens as the model sees them, special tokens included."""
        return len(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def _splitter(self, capacity: int) -> MarkdownSplitter:
        if capacity not in self._splitters:
            self._splitters[capacity] = MarkdownSplitter.from_huggingface_tokenizer(self.tokenizer, capacity)
        return self._splitters[capacity]

    def _split_section(self, section: _Section) -> list[Chunk]:
        heading_tokens = self.count_tokens(section.heading_line) - SPECIAL_TOKENS if section.heading_line else 0
        # Keep the heading line on every piece unless it would crowd out the text itself.
        prefix = section.heading_line if heading_tokens <= self.capacity // 4 else ""
        capacity = self.capacity - (heading_tokens + 2 if prefix else 0)
        chunks = []
        for piece in self._splitter(capacity).chunks(section.body):
            text = f"{prefix}\n\n{piece}" if prefix else piece
            chunks.append(Chunk(text, section.heading_path, self.count_tokens(text)))
        return chunks

    def chunk(self, markdown: str) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in _sections(markdown):
            text = "\n\n".join(p for p in (section.heading_line, section.body) if p)
            tokens = self.count_tokens(text)
            previous = chunks[-1] if chunks else None
            if previous and self._can_absorb(previous, section):
                merged = f"{previous.text}\n\n{text}"
                merged_tokens = self.count_tokens(merged)
                if merged_tokens <= self.max_tokens:
                    chunks[-1] = Chunk(merged, previous.heading_path, merged_tokens)
                    continue
            if tokens <= self.max_tokens:
                chunks.append(Chunk(text, section.heading_path, tokens))
            else:
                chunks.extend(self._split_section(section))
        return [c for c in chunks if c.text.strip()]

    @staticmethod
    def _can_absorb(previous: Chunk, section: _Section) -> bool:
        """A chunk takes in a following section only if that section sits under the chunk's own heading."""
        path = previous.heading_path
        return section.heading_path[: len(path)] == path and len(section.heading_path) > len(path)
