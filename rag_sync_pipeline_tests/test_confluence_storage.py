"""Storage format to Markdown, on samples written after Atlassian's storage-format documentation."""

import re

from rag_sync_pipeline.transform.confluence_storage import (
    STORAGE_CONTENT_TYPE,
    extract_references,
    storage_to_markdown,
)
from rag_sync_pipeline.transform.markdown import to_markdown

PAGE = """<h1>Deploy runbook</h1>
<p>Owned by <ac:link><ri:user ri:account-id="557058:f1e2d3c4-aaaa-bbbb" /></ac:link>, tracked in
<ac:structured-macro ac:name="jira" ac:schema-version="1" ac:macro-id="7a1c">
<ac:parameter ac:name="server">System JIRA</ac:parameter>
<ac:parameter ac:name="serverId">144880e9-a353-312f-9412-ed028e8166fa</ac:parameter>
<ac:parameter ac:name="key">OPS-1234</ac:parameter></ac:structured-macro> and OPS-99.</p>
<ac:structured-macro ac:name="code" ac:schema-version="1">
<ac:parameter ac:name="language">python</ac:parameter>
<ac:parameter ac:name="title">deploy.py</ac:parameter>
<ac:parameter ac:name="linenumbers">true</ac:parameter>
<ac:plain-text-body><![CDATA[if replicas < 3 and env == "prod":
    raise SystemExit("<refuse>")]]></ac:plain-text-body></ac:structured-macro>
<ac:structured-macro ac:name="warning" ac:schema-version="1">
<ac:parameter ac:name="title">Freeze</ac:parameter>
<ac:rich-text-body><p>No deploys on Fridays.</p></ac:rich-text-body></ac:structured-macro>
<ac:structured-macro ac:name="info"><ac:rich-text-body><p>Ask in #deploys first.</p></ac:rich-text-body>
</ac:structured-macro>
<ac:structured-macro ac:name="note"><ac:rich-text-body><p>Rollbacks take ten minutes.</p></ac:rich-text-body>
</ac:structured-macro>
<ac:structured-macro ac:name="tip"><ac:rich-text-body><p>Use the canary.</p></ac:rich-text-body>
</ac:structured-macro>
<ac:structured-macro ac:name="expand"><ac:parameter ac:name="title">Old procedure</ac:parameter>
<ac:rich-text-body><p>SSH into each host and restart.</p></ac:rich-text-body></ac:structured-macro>
<table><colgroup><col /><col /></colgroup><tbody>
<tr><th><p>Service</p></th><th><p>Owner</p></th></tr>
<tr><td><p>gateway</p></td><td><p>Ana</p></td></tr>
<tr><td><p>billing</p></td><td><p>Bo</p></td></tr></tbody></table>
<p>See <ac:link><ri:page ri:content-title="Rollback guide" /><ac:plain-text-link-body><![CDATA[how to roll back]]>
</ac:plain-text-link-body></ac:link> and <ac:link><ri:page ri:space-key="SEC" ri:content-title="Key rotation" />
</ac:link> and <a href="https://status.example.com/deploys">the status page</a>.</p>
<p><ac:image ac:alt="Deploy pipeline diagram"><ri:attachment ri:filename="pipeline.png" /></ac:image>
<ac:image><ri:attachment ri:filename="topology.svg"><ri:page ri:content-title="Network" /></ri:attachment>
</ac:image></p>
<ac:layout><ac:layout-section ac:type="two_equal">
<ac:layout-cell><p>Left column first.</p></ac:layout-cell>
<ac:layout-cell><p>Right column second.</p></ac:layout-cell></ac:layout-section>
<ac:layout-section ac:type="single"><ac:layout-cell><p>Bottom row last.</p></ac:layout-cell></ac:layout-section>
</ac:layout>
<ac:task-list>
<ac:task><ac:task-id>1</ac:task-id><ac:task-status>complete</ac:task-status>
<ac:task-body>Tag the release</ac:task-body></ac:task>
<ac:task><ac:task-id>2</ac:task-id><ac:task-status>incomplete</ac:task-status>
<ac:task-body>Announce in <strong>#general</strong></ac:task-body></ac:task>
</ac:task-list>
<ac:structured-macro ac:name="mystery-vendor-macro" ac:schema-version="1">
<ac:parameter ac:name="secretParam">param-value-must-not-leak</ac:parameter>
<ac:rich-text-body><p>Body text of an unknown macro survives.</p></ac:rich-text-body></ac:structured-macro>
<ac:structured-macro ac:name="toc"><ac:parameter ac:name="maxLevel">2</ac:parameter></ac:structured-macro>
"""


def test_every_construct_becomes_readable_markdown():
    markdown = storage_to_markdown(PAGE)
    assert markdown.startswith("# Deploy runbook\n")
    assert '```python\nif replicas < 3 and env == "prod":\n    raise SystemExit("<refuse>")\n```' in markdown
    assert "> **Warning: Freeze**\n>\n> No deploys on Fridays." in markdown
    assert "> **Info:**\n>\n> Ask in #deploys first." in markdown
    assert "> **Note:**" in markdown and "> **Tip:**" in markdown and "Use the canary." in markdown
    assert "**Old procedure**\n\nSSH into each host and restart." in markdown
    assert "| Service | Owner |\n| --- | --- |\n| gateway | Ana |\n| billing | Bo |" in markdown
    assert "See how to roll back and Key rotation and [the status page](https://status.example.com/deploys)." \
        in markdown
    assert "[image: Deploy pipeline diagram]" in markdown and "[image: topology.svg]" in markdown
    assert markdown.index("Left column first.") < markdown.index("Right column second.") \
        < markdown.index("Bottom row last.")
    assert "- [x] Tag the release" in markdown and "- [ ] Announce in **#general**" in markdown
    assert "Body text of an unknown macro survives." in markdown
    assert "tracked in OPS-1234 and OPS-99." in " ".join(markdown.split())


def test_no_markup_parameters_or_cdata_markers_leak():
    markdown = storage_to_markdown(PAGE)
    for leaked in ("ac:", "ri:", "CDATA", "]]>", "param-value-must-not-leak", "System JIRA", "144880e9",
                   "linenumbers", "maxLevel", "two_equal", "557058", "deploy.py"):
        assert leaked not in markdown, leaked
    assert not re.search(r"<\w", markdown.replace('"<refuse>"', "").replace("replicas < 3", ""))


def test_nested_macros_convert_inside_out():
    storage = """<ac:structured-macro ac:name="expand"><ac:parameter ac:name="title">Setup</ac:parameter>
<ac:rich-text-body><ac:structured-macro ac:name="note"><ac:rich-text-body><p>Needs VPN.</p>
<ac:structured-macro ac:name="code"><ac:parameter ac:name="language">bash</ac:parameter>
<ac:plain-text-body><![CDATA[vpn up --region eu]]></ac:plain-text-body></ac:structured-macro>
</ac:rich-text-body></ac:structured-macro></ac:rich-text-body></ac:structured-macro>"""
    markdown = storage_to_markdown(storage)
    assert markdown.startswith("**Setup**")
    assert "> **Note:**" in markdown and "> Needs VPN." in markdown
    assert "> ```bash\n> vpn up --region eu\n> ```" in markdown


def test_link_without_text_uses_the_page_title_and_attachment_of_another_page_its_file_name():
    storage = ('<p><ac:link><ri:page ri:content-title="Runbook index" /></ac:link> | '
               '<ac:link><ri:attachment ri:filename="report.pdf"><ri:page ri:space-key="FIN" '
               'ri:content-title="Q3 numbers" /></ri:attachment></ac:link> | '
               '<ac:link ac:anchor="step-2"><ac:link-body>step <em>two</em></ac:link-body></ac:link> | '
               '<ac:link><ri:user ri:username="jdoe" /></ac:link></p>')
    assert storage_to_markdown(storage).strip() == "Runbook index | report.pdf | step two | @jdoe"


def test_unknown_macro_with_plain_text_body_keeps_text_not_markup():
    storage = ('<ac:structured-macro ac:name="html"><ac:plain-text-body><![CDATA[<div class="x"><b>Hours:</b> '
               '9-17</div>]]></ac:plain-text-body></ac:structured-macro><p>Status: '
               '<ac:structured-macro ac:name="status"><ac:parameter ac:name="colour">Green</ac:parameter>'
               '<ac:parameter ac:name="title">ON TRACK</ac:parameter></ac:structured-macro></p>'
               '<p>Due <time datetime="2025-03-01" /><ac:emoticon ac:name="smile" /></p>'
               '<ac:placeholder>Type here</ac:placeholder>')
    markdown = storage_to_markdown(storage)
    assert "Hours: 9-17" in markdown and "<" not in markdown and 'class="x"' not in markdown
    assert "Status: [ON TRACK]" in markdown and "Green" not in markdown
    assert "Due 2025-03-01" in markdown and "Type here" not in markdown and "smile" not in markdown


def test_old_style_ac_macro_and_noformat_are_code():
    storage = ('<ac:macro ac:name="noformat"><ac:plain-text-body><![CDATA[  indented\n    more]]>'
               '</ac:plain-text-body></ac:macro>')
    assert "```\n  indented\n    more\n```" in storage_to_markdown(storage)


def test_references_name_jira_keys_mentions_pages_links_and_attachments():
    references = extract_references(PAGE)
    assert references.jira_keys == ["OPS-1234", "OPS-99"]
    assert references.mentions == ["557058:f1e2d3c4-aaaa-bbbb"]
    assert references.page_links == ["Rollback guide", "SEC:Key rotation"]
    assert references.links == ["https://status.example.com/deploys"]
    assert references.attachments == ["pipeline.png", "topology.svg"]


def test_markdown_dispatcher_converts_the_storage_content_type():
    markdown, title = to_markdown(PAGE.encode(), STORAGE_CONTENT_TYPE)
    assert "```python" in markdown and "ac:" not in markdown and title == ""
