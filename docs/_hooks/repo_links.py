"""A mkdocs hook: links from a page to repository files outside docs/ become plain repository paths.

A page may link to ``../benchmarks/RESULTS.md`` or ``../examples/custom_sampler.py`` (useful when the
Markdown is read on a code host). Those files are not part of the site, so mkdocs would report the
link as not found and the strict build would fail. This hook rewrites such a link, before the page
is rendered, into its text followed by the repository path in code format — only when the target
exists in the repository. A link to a file that exists nowhere is left alone, so the strict build
still reports it.
"""

from __future__ import annotations

import re
from pathlib import Path

_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s#]+)(#[^)\s]*)?\)")


def _rewrite(markdown: str, page_dir: Path, docs_dir: Path, repo: Path) -> str:
    def sub(m: re.Match) -> str:
        text, target = m.group(1), m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return m.group(0)  # URLs and absolute paths: not ours
        resolved = (page_dir / target).resolve()
        try:
            resolved.relative_to(docs_dir)
            return m.group(0)  # inside docs/: mkdocs validates it
        except ValueError:
            pass
        try:
            rel = resolved.relative_to(repo).as_posix()
        except ValueError:
            return m.group(0)
        if not resolved.exists():
            return m.group(0)
        plain = text.strip("`")
        return f"`{rel}`" if plain == rel or plain == Path(rel).name else f"{text} (`{rel}`)"

    # leave fenced code blocks untouched
    parts = re.split(r"(^```.*?^```)", markdown, flags=re.S | re.M)
    return "".join(p if p.startswith("```") else _LINK.sub(sub, p) for p in parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (mkdocs hook signature)
    docs_dir = Path(config["docs_dir"]).resolve()
    repo = docs_dir.parent
    page_dir = (docs_dir / page.file.src_uri).parent
    return _rewrite(markdown, page_dir, docs_dir, repo)
