"""The SQL scanner the loader and the executor share: placeholders only in code, statements."""

from __future__ import annotations

import pytest

from agent.tools.sql_params import parse_query


@pytest.mark.parametrize(
    ("query", "names", "pyformat"),
    [
        ("SELECT * FROM t WHERE a = :a AND b = :b", ("a", "b"), "a = %(a)s AND b = %(b)s"),
        ("SELECT :a, :a", ("a",), "SELECT %(a)s, %(a)s"),
        ("SELECT x::int FROM t WHERE y = :y", ("y",), "x::int FROM t WHERE y = %(y)s"),
        ("SELECT ':not' || :yes", ("yes",), "SELECT ':not' || %(yes)s"),
        ("SELECT 'it''s :no' WHERE a = :a", ("a",), "'it''s :no' WHERE a = %(a)s"),
        ('SELECT ":col" FROM t', (), 'SELECT ":col" FROM t'),
        ("SELECT 1 -- :comment\nWHERE a = :a", ("a",), "-- :comment\nWHERE a = %(a)s"),
        ("SELECT /* :c */ :a", ("a",), "/* :c */ %(a)s"),
        ("SELECT $$ :no $$, $q$ :no $q$, :a", ("a",), "$$ :no $$, $q$ :no $q$, %(a)s"),
        ("SELECT E'\\' :no' , :a", ("a",), "E'\\' :no' , %(a)s"),
        ("SELECT * FROM t WHERE s LIKE '50%' OR r = :r", ("r",), "LIKE '50%%' OR r = %(r)s"),
        ("SELECT 10 % 3, :a", ("a",), "SELECT 10 %% 3, %(a)s"),
        (
            "SELECT $$ see :ref; $$ AS note, name FROM t WHERE id = :id",
            ("id",),
            "SELECT $$ see :ref; $$ AS note, name FROM t WHERE id = %(id)s",
        ),
        (
            "SELECT $body$ a $$ :inner; $$ b $body$ || :x",
            ("x",),
            "$body$ a $$ :inner; $$ b $body$ || %(x)s",
        ),
        ("SELECT $1::text, :a", ("a",), "SELECT $1::text, %(a)s"),
        ("SELECT :a::int + :b::numeric(4, 2)", ("a", "b"), "%(a)s::int + %(b)s::numeric(4, 2)"),
        ("SELECT '50%' || $t$ 10% :no $t$ || :a", ("a",), "'50%%' || $t$ 10%% :no $t$ || %(a)s"),
    ],
)
def test_the_scanner_finds_placeholders_only_in_code(
    query: str, names: tuple[str, ...], pyformat: str
) -> None:
    parsed = parse_query(query)
    assert parsed.names == names
    assert pyformat in parsed.pyformat
    assert parsed.statements == 1


@pytest.mark.parametrize(
    ("query", "statements", "is_read"),
    [
        ("SELECT 1;", 1, True),
        ("  -- leading comment\n  select 1", 1, True),
        ("(SELECT 1) UNION (SELECT 2)", 1, True),
        ("SELECT ';'", 1, True),
        ('SELECT $$;$$, $x$ ; $x$, "a;b", 1 /* ; */ -- ;', 1, True),
        ("SELECT 1; SELECT 2", 2, True),
        ("SELECT $$ a $$; DELETE FROM t", 2, True),
        ("UPDATE t SET a = 1; -- done", 1, False),
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", 1, False),
        ("INSERT INTO t VALUES (1) RETURNING id", 1, False),
        ("-- only a comment", 0, False),
        ("", 0, False),
    ],
)
def test_the_scanner_counts_statements_and_tells_reads(
    query: str, statements: int, is_read: bool
) -> None:
    parsed = parse_query(query)
    assert (parsed.statements, parsed.is_read) == (statements, is_read)


def test_a_dollar_after_an_identifier_is_part_of_it_not_a_quote() -> None:
    """PostgreSQL identifiers may contain ``$``: ``a$b$`` is a name, so what follows is code."""
    parsed = parse_query("SELECT a$b$ FROM t WHERE id = :id; SELECT 2")
    assert parsed.names == ("id",)
    assert parsed.statements == 2


def test_an_unterminated_quote_runs_to_the_end() -> None:
    """Half a literal hides the rest from the scanner; the database rejects the query later."""
    assert parse_query("SELECT $$ :a; SELECT 2").names == ()
    assert parse_query("SELECT ' :a; SELECT 2").statements == 1
