"""Real-looking Confluence pages: headings, paragraphs, lists, code macros and tables, of varied length.

A page is generated from its seed, so a run is reproducible, and is kept as a `PageSpec` (sections of blocks)
so an edit can change exactly one paragraph. Sentences are drawn from a technical vocabulary at random,
so no two chunks share a text (the vector cache would otherwise hide embedding work).
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field

SUBJECTS = ["the ingestion worker", "the billing service", "the primary database", "the search cluster",
            "the deploy pipeline", "the on-call engineer", "the load balancer", "the message queue",
            "the backup job", "the API gateway", "the feature flag service", "the cache layer", "the data team",
            "the release manager", "the metrics exporter", "the auth proxy", "the scheduler", "each replica"]
VERBS = ["restarts", "validates", "replicates", "throttles", "rotates", "archives", "reindexes", "drains",
         "promotes", "monitors", "rolls back", "compacts", "encrypts", "retries", "snapshots", "migrates"]
OBJECTS = ["the write-ahead log", "stale sessions", "the TLS certificates", "customer invoices", "queued events",
           "the nightly export", "slow queries", "the staging environment", "orphaned volumes", "the DNS records",
           "expired tokens", "the audit trail", "hot partitions", "the schema registry", "failed webhooks"]
CLAUSES = ["before the maintenance window opens", "when latency exceeds the p95 budget", "after every deploy",
           "unless the incident commander objects", "within fifteen minutes of the alert", "during the weekly review",
           "if the error rate stays above two percent", "once the canary is healthy", "on the first business day",
           "while traffic is drained to the secondary region", "so that the dashboards stay accurate"]
TOPICS = ["Overview", "Prerequisites", "Failover", "Backup and restore", "Capacity planning", "Alerting",
          "Troubleshooting", "Access control", "Release process", "Data retention", "Cost", "Known issues",
          "Rollback", "Escalation", "Monitoring", "Configuration", "Upgrades", "Disaster recovery"]
CODE = ["kubectl -n {ns} rollout restart deployment/{svc}\nkubectl -n {ns} rollout status deployment/{svc}",
        "def drain(queue):\n    while (message := queue.get(timeout={n})):\n"
        "        handle(message)\n        queue.ack(message)",
        "SELECT account_id, sum(amount) FROM invoices\nWHERE issued_at > now() - interval '{n} days'\nGROUP BY 1;",
        "aws s3 sync s3://{svc}-backups/{ns}/ ./restore --exact-timestamps\npg_restore -d {svc} ./restore/latest.dump"]


def sentence(rng: random.Random) -> str:
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(CLAUSES)}"
    if rng.random() < 0.4:
        text += f", and {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if rng.random() < 0.3:
        text += f" (ticket OPS-{rng.randint(100, 9999)})"
    return text[0].upper() + text[1:] + "."


def paragraph(rng: random.Random, sentences: int | None = None) -> str:
    return " ".join(sentence(rng) for _ in range(sentences or rng.randint(2, 5)))


@dataclass
class Block:
    kind: str  # p | ul | code | table
    content: list[str] | str


@dataclass
class Section:
    heading: str
    level: int
    blocks: list[Block] = field(default_factory=list)


@dataclass
class PageSpec:
    title: str
    sections: list[Section]
    seed: int


def _section(rng: random.Random, level: int) -> Section:
    section = Section(f"{rng.choice(TOPICS)} {rng.randint(1, 99)}", level)
    words = 0
    target = rng.randint(90, 170)  # about 120-220 tokens: one chunk per section, as real runbooks split
    while words < target:
        roll = rng.random()
        if roll < 0.65:
            block = Block("p", paragraph(rng))
        elif roll < 0.8:
            block = Block("ul", [sentence(rng) for _ in range(rng.randint(2, 4))])
        elif roll < 0.9:
            code = rng.choice(CODE).format(ns=f"team-{rng.randint(1, 40)}", svc=rng.choice(["billing", "search",
                                                                                           "ingest", "auth"]),
                                           n=rng.randint(2, 90))
            block = Block("code", code)
        else:
            rows = [[f"{rng.choice(['eu-west', 'us-east', 'ap-south'])}-{rng.randint(1, 9)}",
                     f"{rng.randint(20, 400)} ms", rng.choice(["healthy", "degraded", "draining"])]
                    for _ in range(rng.randint(2, 5))]
            block = Block("table", [["Region", "p95 latency", "State"], *[list(r) for r in rows]])
        section.blocks.append(block)
        words += len(_text_of(block).split())
    return section


def _text_of(block: Block) -> str:
    if isinstance(block.content, str):
        return block.content
    return " ".join(" ".join(cell) if isinstance(cell, list) else cell for cell in block.content)


def generate_page(seed: int, long: bool = False) -> PageSpec:
    rng = random.Random(seed)
    count = rng.randint(14, 24) if long else max(1, min(12, int(rng.lognormvariate(1.05, 0.6))))
    sections = [_section(rng, 3 if i and rng.random() < 0.3 else 2) for i in range(count)]
    return PageSpec(f"{rng.choice(TOPICS)} runbook {seed}", sections, seed)


def edit_one_paragraph(spec: PageSpec, seed: int) -> None:
    """Rewrite one paragraph in the middle of the page; everything else stays byte for byte."""
    rng = random.Random(seed)
    middle = spec.sections[len(spec.sections) // 2:] + spec.sections[:len(spec.sections) // 2]
    for section in middle:
        for block in section.blocks:
            if block.kind == "p":
                block.content = paragraph(rng)
                return
    raise ValueError("page has no paragraph")


def render(spec: PageSpec) -> str:
    """Confluence storage format (XHTML with ac: macros), as the REST API returns it."""
    parts = []
    for section in spec.sections:
        parts.append(f"<h{section.level}>{html.escape(section.heading)}</h{section.level}>")
        for block in section.blocks:
            if block.kind == "p":
                parts.append(f"<p>{html.escape(block.content)}</p>")
            elif block.kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.content) + "</ul>")
            elif block.kind == "code":
                parts.append('<ac:structured-macro ac:name="code"><ac:parameter ac:name="language">bash'
                             f'</ac:parameter><ac:plain-text-body><![CDATA[{block.content}]]></ac:plain-text-body>'
                             '</ac:structured-macro>')
            else:
                header, *rows = block.content
                cells = "".join(f"<th>{html.escape(c)}</th>" for c in header)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                parts.append(f"<table><tbody><tr>{cells}</tr>{body}</tbody></table>")
    return "".join(parts)


def populate_space(sim, space: str, pages: int, seed_base: int = 0, long_every: int = 50) -> dict[str, PageSpec]:
    """A home page and its children in a simulator space: page id -> spec. Every `long_every`-th page is long.
    Pages are written 30 simulated minutes apart, as a real space grows over months: an incremental listing
    (lastmodified since the mark less the overlap) then names what changed, not every page written in the same
    instant as the newest one."""
    sim.add_space(space)
    specs: dict[str, PageSpec] = {}
    home = None
    for index in range(pages):
        sim.advance(minutes=30)
        spec = generate_page(seed_base + index, long=index % long_every == long_every - 1)
        page = sim.add_page(space, spec.title, render(spec), parent_id=home)
        home = home or page.id
        specs[page.id] = spec
    return specs
