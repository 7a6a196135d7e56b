"""The one reader of ``sql`` tools' query text: its ``:name`` placeholders and statements.

Both the agent-file loader (``agent check``, start-up, reload) and the executor use
:func:`parse_query`, so a query the loader accepts is a query the executor runs, with the same
parameters. The scanner skips what is not code: single-quoted strings (``E'...'`` with backslash
escapes), double-quoted identifiers, ``--`` and ``/* */`` comments and PostgreSQL dollar quoting
(``$$...$$``, ``$tag$...$tag$``), and reads ``::`` as a cast, never as a placeholder.

It has no dependencies on purpose: the configuration layer imports it without the executors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_READ_KEYWORDS: Final = frozenset({"SELECT", "VALUES", "TABLE", "SHOW"})
_DOLLAR_TAG: Final = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A configured query, scanned once: its placeholders and its PostgreSQL form."""

    text: str
    """As configured; what SQLite runs."""
    pyformat: str
    """For psycopg: ``:name`` as ``%(name)s``, every literal ``%`` doubled."""
    names: tuple[str, ...]
    """Placeholder names, in order of first use."""
    statements: int
    """Top-level statements (a trailing ``;`` does not count as another)."""
    is_read: bool
    """Whether it starts with a keyword that only reads (SELECT, VALUES, TABLE, SHOW): rows can
    be streamed. A ``WITH`` may hide a write, so it counts as a write."""


def parse_query(query: str) -> ParsedQuery:
    """Scan ``query`` for ``:name`` placeholders outside literals, identifiers and comments."""
    out: list[str] = []
    names: list[str] = []
    statements = 0
    has_code = False  # the current statement has something besides blanks and comments
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        end = _skip_quoted(query, i)
        if end is not None:
            if c in "'\"$":
                has_code = True
            out.append(query[i:end].replace("%", "%%"))
            i = end
            continue
        if c == ":" and query.startswith("::", i):  # a PostgreSQL cast, not a placeholder
            out.append("::")
            i += 2
            continue
        if c == ":" and (match := _NAME.match(query, i + 1)):
            name = match.group(0)
            if name not in names:
                names.append(name)
            out.append(f"%({name})s")
            has_code = True
            i = match.end()
            continue
        if c == ";":
            statements += int(has_code)
            has_code = False
        elif not c.isspace():
            has_code = True
        out.append("%%" if c == "%" else c)
        i += 1
    statements += int(has_code)
    first = re.match(r"\(*\s*([A-Za-z]+)", _strip_comments(query))
    is_read = first is not None and first.group(1).upper() in _READ_KEYWORDS
    return ParsedQuery(query, "".join(out), tuple(names), statements, is_read)


def _strip_comments(query: str) -> str:
    """``query`` without its leading comments (for finding the first keyword)."""
    while True:
        query = query.lstrip()
        end = _skip_quoted(query, 0) if query.startswith(("--", "/*")) else None
        if end is None:
            return query
        query = query[end:]


def _skip_quoted(query: str, i: int) -> int | None:
    """Where the literal, quoted identifier or comment starting at ``i`` ends (None: none)."""
    c = query[i]
    if c == "'":
        # E'...' strings (PostgreSQL) escape with backslashes; others only by doubling the quote.
        escapes = (
            i > 0
            and query[i - 1] in "eE"
            and (i < 2 or not (query[i - 2].isalnum() or query[i - 2] == "_"))
        )
        return _end_of_quote(query, i, "'", backslash=escapes)
    if c == '"':
        return _end_of_quote(query, i, '"', backslash=False)
    if query.startswith("--", i):
        newline = query.find("\n", i)
        return len(query) if newline < 0 else newline
    if query.startswith("/*", i):
        close = query.find("*/", i + 2)
        return len(query) if close < 0 else close + 2
    # PostgreSQL reads a "$" straight after an identifier as part of it (``a$b$``), not as the
    # start of a dollar quote.
    after_word = i > 0 and (query[i - 1].isalnum() or query[i - 1] in "_$")
    if c == "$" and not after_word and (tag := _DOLLAR_TAG.match(query, i)):
        close = query.find(tag.group(0), tag.end())
        return len(query) if close < 0 else close + len(tag.group(0))
    return None


def _end_of_quote(query: str, i: int, quote: str, *, backslash: bool) -> int:
    j = i + 1
    while j < len(query):
        if backslash and query[j] == "\\":
            j += 2
            continue
        if query[j] == quote:
            if query.startswith(quote * 2, j):  # a doubled quote is a quote character
                j += 2
                continue
            return j + 1
        j += 1
    return len(query)
