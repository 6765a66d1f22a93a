"""The README is a front page; everything it used to say lives in the docs site.

The site itself is built with ``mkdocs build --strict`` by scripts/test.sh, which fails
on a broken link or anchor, or a page missing from the nav.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
README_MAX_LINES = 300

OLD_README_TITLES = [
    "virtbus",
    "Managing a fleet from a terminal",
    "Running an agent",
    "Watching an agent",
    "What it costs (benchmarks)",
    "Host policy and hostile input",
    "The policy file",
    "What every container gets",
    "Bad input",
    "The CLI",
    "Broadcasts",
    "`--json`",
    "`event`",
    "`hosts`",
    "`schema --asyncapi`",
    "The client library",
    "Signed commands and registry logins",
    "Signed commands",
    "Registry logins",
    "The protocol",
    "Topology",
    "Commands",
    "Replies",
    "Semantics",
    "Delivery guarantees",
    "Clusters and network cuts",
    "Events",
    "States and reasons (`virDomainState`)",
    "Worked example (plain aio-pika)",
    "Domain XML",
    "The libvirt protocol gateway",
    "Broker roles and TLS",
    "Who may do what on the broker: `virtbus provision`",
    "TLS",
    "Repository layout",
]
"""Every section title of the 1,600-line README this site replaced."""

HEADING = re.compile(r"^#{1,6} +(.+?) *#*$")


def _headings(markdown: str) -> list[str]:
    """Heading texts outside fenced code blocks (a ``# comment`` in a shell block is not
    a heading)."""
    headings: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        marker = stripped[:3]
        if marker in ("```", "~~~"):
            fence = None if fence == marker else fence or marker
            continue
        if fence is None and (match := HEADING.match(line)):
            headings.append(match.group(1))
    return headings


def test_readme_is_a_front_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < README_MAX_LINES
    assert "./scripts/demo.sh" in text
    assert "./scripts/test.sh" in text


def test_every_old_readme_section_is_in_the_docs() -> None:
    headings = {
        heading for page in DOCS.rglob("*.md") for heading in _headings(page.read_text("utf-8"))
    }
    missing = [title for title in OLD_README_TITLES if title not in headings]
    assert not missing, f"README sections missing from docs/: {missing}"


def test_headings_skip_fenced_code() -> None:
    assert _headings("# Title\n```sh\n# not a heading\n```\n## Sub\n") == ["Title", "Sub"]
