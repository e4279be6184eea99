"""Griffe extensions for the docs build: grouped parameter entries, and Sphinx roles.

**Grouped parameters.**
The project's Google-style docstrings sometimes document related parameters together
(``t0, t1: the start and end times``). Griffe's Google parser expects one name per entry and warns
about a parameter called ``t0, t1``. This extension rewrites such an entry, in an ``Args:`` /
``Keyword Args:`` / ``Parameters:`` section only, into one entry per name with the shared
description, before the docstring is parsed. Every other check stays on: a documented name that
is not in the signature still fails ``mkdocs build --strict``.

**Sphinx roles.** Many docstrings cross-reference with Sphinx roles (``:func:`sdeflow.simulate```,
``:class:`~sdeflow.latent.Autoencoder```), which Markdown would show verbatim. They become inline code
of the name (the last component when the target starts with ``~``, as Sphinx shows it).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
_HEADER = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const):`(~?)([^`]+)`")
_GROUPED = re.compile(r"^(\s+)((?:\*{0,2}[A-Za-z_]\w*\s*,\s*)+\*{0,2}[A-Za-z_]\w*)(\s*(?:\([^)]*\))?\s*:.*)$")


def split_grouped_params(text: str) -> str:
    """Return ``text`` with every grouped ``a, b: desc`` entry of an argument section split."""
    out: list[str] = []
    lines = text.splitlines()
    section_indent: int | None = None
    entry_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        head = _SECTION.match(line)
        if head:
            section_indent, entry_indent = len(head.group(1)), None
            out.append(line)
            i += 1
            continue
        if section_indent is not None and line.strip():
            indent = len(line) - len(line.lstrip())
            if indent <= section_indent:  # the section ended (a new header or prose)
                section_indent = entry_indent = None
            elif entry_indent is None:
                entry_indent = indent
        grouped = _GROUPED.match(line) if section_indent is not None else None
        if grouped and len(grouped.group(1)) == entry_indent and not _HEADER.match(line):
            # collect the entry's continuation lines (indented deeper than the entry)
            body = [grouped.group(3)]
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > entry_indent):
                body.append(lines[j])
                j += 1
            while body and not body[-1].strip():
                j -= 1
                body.pop()
            for name in (n.strip() for n in grouped.group(2).split(",")):
                out.append(grouped.group(1) + name + body[0])
                out.extend(body[1:])
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def plain_roles(text: str) -> str:
    """Return ``text`` with every Sphinx cross-reference role replaced by inline code of its target."""

    def sub(m: re.Match) -> str:
        target = m.group(2).strip()
        if "<" in target and target.endswith(">"):  # :func:`title <target>`
            target = target[: target.index("<")].strip()
        shown = target.rsplit(".", 1)[-1] if m.group(1) else target
        return f"`{shown}`"

    return _ROLE.sub(sub, text)


class SplitGroupedParams(Extension):
    """Split ``a, b: desc`` argument entries before griffe parses the docstring."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and "," in docstring.value:
            docstring.value = split_grouped_params(docstring.value)


class SphinxRolesToCode(Extension):
    """Show ``:func:`name``` and the other Sphinx roles as inline code ``name``."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and ":`" in docstring.value:
            docstring.value = plain_roles(docstring.value)
