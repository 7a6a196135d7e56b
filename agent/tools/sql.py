"""``sql`` tools: one parameterised statement against the embedded CRM, SQLite or PostgreSQL.

Arguments are only ever *bound* as parameters: the configured query names them ``:name`` and the
driver sends their values separately from the SQL text, so ``'; DROP TABLE customers; --`` is a
string that matches nothing. The query text is the configuration's alone. For SQLite it runs as
written (sqlite3 binds ``:name`` itself); for PostgreSQL it is translated once to psycopg's
``%(name)s`` by :mod:`agent.tools.sql_params` (the scanner the agent-file loader uses too), which
knows string literals, quoted identifiers, comments, dollar quoting and ``::`` casts, and doubles
every other ``%`` so psycopg cannot mistake it for a placeholder.

A SELECT returns at most ``max_rows`` rows as a list of ``{column: value}``; other statements
return ``{"rows_affected": n}``. Connections autocommit: one statement is one transaction.

Nothing blocks the event loop, and a cancelled query really stops:

* SQLite runs in a worker thread. When the awaiting task is cancelled (the call ended, the tool's
  timeout fired), the event loop calls ``connection.interrupt()`` and sets a flag that a progress
  handler checks every few thousand VM steps (interrupt alone misses a statement that had not
  started yet); the thread's query fails with "interrupted" and the thread returns. The task
  waits briefly for that, so the connection is idle before it is reused or closed.
* PostgreSQL uses psycopg's asyncio connection, which on cancellation sends the server a cancel
  request for the running query. Rows are streamed, so a query stops at ``max_rows`` (the rest is
  cancelled server-side) instead of being buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import sqlite3
import threading
from collections.abc import AsyncGenerator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import structlog

from agent.config.tools import SqlTool
from agent.tools.base import ToolError
from agent.tools.sql_params import ParsedQuery, parse_query

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger("agent.tools")

# SQLite VM instructions between checks of the cancellation flag: frequent enough to stop within
# a millisecond or so, rare enough to cost nothing measurable.
_PROGRESS_STEPS: Final = 4096
# How long a cancelled query may take to notice before the task gives up waiting for its thread.
_INTERRUPT_GRACE_S: Final = 2.0
_POOL_SIZE: Final = 4
_MAX_CONNECTIONS: Final = 10  # per database, per process
# SQLite queries run on their own threads: a stuck Python tool cannot starve them.
_SQLITE_THREADS: Final = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tool-sqlite")

CONSTRAINT_MESSAGE: Final = "the database refused these values (a constraint failed)"
FAILURE_MESSAGE: Final = "the database query failed"


def validate_sql(tool: SqlTool, known: set[str]) -> list[str]:
    """Problems with an ``sql`` tool's configuration; ``known`` are its parameters' names."""
    problems = []
    parsed = parse_query(tool.query)
    if parsed.statements != 1:
        problems.append(f"query must be exactly one statement, found {parsed.statements}")
    unknown = sorted(set(parsed.names) - known)
    if unknown:
        problems.append(
            "query uses placeholder(s) that are neither parameters nor bound: "
            + ", ".join(f":{name}" for name in unknown)
        )
    url = tool.database_url
    if url is not None and url.startswith("sqlite:///"):
        raw = url.removeprefix("sqlite:///")
        if not raw or raw == ":memory:" or raw.startswith("file:"):
            problems.append(f"database_url {url!r} needs a file path")
    return problems


def prepare_sql(tool: SqlTool, crm_path: Path | None) -> str | None:
    """Compile ``tool``'s statement against its database without running it; why it fails
    (``no such column: phone``), or None when it compiles.

    Blocking, for ``agent check`` and ``agent doctor``, so that a wrong table or column is found
    before a caller hears "the query failed". SQLite compiles it with ``EXPLAIN`` (every
    placeholder bound to NULL: compiling never depends on values); PostgreSQL with ``PREPARE``
    (then ``DEALLOCATE``), which parses, resolves names and infers parameter types without
    executing. The embedded CRM (``database_url`` unset) is its file when it exists, else its
    schema in memory (``agent serve`` creates the file from the same schema).
    """
    url = tool.database_url
    parsed = parse_query(tool.query)
    if url is None or url.startswith("sqlite:///"):
        return _prepare_sqlite(parsed, url, crm_path)
    return _prepare_postgres(parsed, url)


def _prepare_sqlite(parsed: ParsedQuery, url: str | None, crm_path: Path | None) -> str | None:
    from agent.crm.seed import SCHEMA

    try:
        if url is None and (crm_path is None or not crm_path.exists()):
            connection = sqlite3.connect(":memory:")
            for statement in SCHEMA:
                connection.execute(statement)
        else:
            path = crm_path if url is None else Path(url.removeprefix("sqlite:///"))
            assert path is not None
            if not path.exists():
                return f"database file {str(path)!r} does not exist"
            connection = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"cannot open the database: {exc}"
    try:
        connection.execute("EXPLAIN " + parsed.text, dict.fromkeys(parsed.names)).close()
    except sqlite3.Error as exc:
        return f"the database refuses the query: {exc}"
    finally:
        connection.close()
    return None


# SQLSTATE 42P18: a parameter whose type PostgreSQL cannot infer from the statement alone
# (``SELECT :x``). The statement is otherwise valid: its value decides at run time.
_INDETERMINATE_DATATYPE: Final = "42P18"


def _prepare_postgres(parsed: ParsedQuery, url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "PostgreSQL needs psycopg: pip install '.[postgres]'"
    # PREPARE takes $1, $2...: the psycopg form, with each %(name)s numbered by first use.
    numbered = parsed.pyformat.replace("%%", "\0")  # a literal % is never a placeholder
    for index, name in enumerate(parsed.names, start=1):
        numbered = numbered.replace(f"%({name})s", f"${index}")
    numbered = numbered.replace("\0", "%")
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
            try:
                connection.execute(("PREPARE agent_check AS " + numbered).encode(), prepare=False)
            except psycopg.Error as exc:
                if exc.sqlstate == _INDETERMINATE_DATATYPE:
                    return None
                # The primary message alone: the rest quotes the PREPARE, not the user's query.
                detail = exc.diag.message_primary or str(exc).strip().splitlines()[0]
                return f"the database refuses the query: {detail}"
            connection.execute(b"DEALLOCATE agent_check", prepare=False)
    except psycopg.Error as exc:
        return f"cannot reach the database {_without_password(url)}: {str(exc).strip()}"
    return None


def bind_parameters(parsed: ParsedQuery, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """One value per placeholder: the argument, NULL when not given, JSON text for a list or an
    object (no driver binds those the same way, and JSON text works in both databases)."""
    params = {}
    for name in parsed.names:
        value = arguments.get(name)
        if isinstance(value, list | dict):
            value = json.dumps(value)
        params[name] = value
    return params


# -- databases -------------------------------------------------------------------------------------


class Database(Protocol):
    """Somewhere an ``sql`` tool's statement runs."""

    async def execute(self, query: ParsedQuery, params: Mapping[str, Any], max_rows: int) -> Any:
        """Run the statement: rows as dicts (at most ``max_rows``), or ``{"rows_affected": n}``.
        Raises ``ToolError`` with a message fit for the model when the database refuses it."""
        ...

    async def close(self) -> None:
        """Close pooled connections."""
        ...


class _SqliteJob:
    """One query's link between the event loop (which may cancel it) and its thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self.cancelled = False

    def start(self, connection: sqlite3.Connection) -> bool:
        """Called by the thread before it runs the statement; False if already cancelled."""
        with self._lock:
            if self.cancelled:
                return False
            self._connection = connection
            connection.set_progress_handler(self._should_stop, _PROGRESS_STEPS)
            return True

    def finish(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.set_progress_handler(None, 0)
            self._connection = None

    def cancel(self) -> None:
        """Called on the event loop. ``interrupt`` is the one sqlite3 method that is safe to call
        from another thread while the connection is busy."""
        with self._lock:
            self.cancelled = True
            if self._connection is not None:
                self._connection.interrupt()

    def _should_stop(self) -> int:
        return 1 if self.cancelled else 0


class SqliteDatabase:
    """An SQLite file, queried from worker threads through a small pool of connections.

    ``must_exist``: open the file read-write without creating it, so a mistyped path is an
    error rather than a new empty database (the CRM creates its own file beforehand).
    """

    def __init__(
        self,
        path: Path,
        *,
        must_exist: bool = True,
        pool_size: int = _POOL_SIZE,
        executor: Executor = _SQLITE_THREADS,
    ) -> None:
        self._executor = executor
        self.path = path
        self._must_exist = must_exist
        self._pool_size = pool_size
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False

    @property
    def running(self) -> int:
        """Queries whose threads have not returned yet (0 once every cancelled one stopped)."""
        with self._lock:
            return self._running

    async def execute(self, query: ParsedQuery, params: Mapping[str, Any], max_rows: int) -> Any:
        loop = asyncio.get_running_loop()
        job = _SqliteJob()
        context = contextvars.copy_context()  # the thread logs with the call's context
        future = loop.run_in_executor(
            self._executor, context.run, self._run, job, query.text, dict(params), max_rows
        )
        try:
            # Shielded: a cancellation must reach the query through ``job``, not by abandoning
            # the future while its thread runs on.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            job.cancel()
            await asyncio.wait([future], timeout=_INTERRUPT_GRACE_S)
            if not future.done():
                log.warning("tool.sql_not_interrupted", path=str(self.path))
            future.add_done_callback(_consume)
            raise

    def _run(self, job: _SqliteJob, sql: str, params: dict[str, Any], max_rows: int) -> Any:
        with self._lock:
            self._running += 1
        try:
            connection = self._acquire()
            reusable = False
            try:
                if not job.start(connection):
                    raise ToolError("cancelled")  # never seen: the awaiting task is gone
                try:
                    result = _fetch(connection.execute(sql, params), max_rows)
                finally:
                    job.finish()
                reusable = True
                return result
            except sqlite3.IntegrityError as exc:
                log.info("tool.sql_constraint", error=str(exc))
                raise ToolError(CONSTRAINT_MESSAGE) from exc
            except sqlite3.Error as exc:
                if job.cancelled:
                    raise ToolError("cancelled") from exc
                log.error("tool.sql_failed", error=str(exc), path=str(self.path))
                raise ToolError(FAILURE_MESSAGE) from exc
            finally:
                self._release(connection, reusable)
        finally:
            with self._lock:
                self._running -= 1

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            if self._must_exist:
                connection = sqlite3.connect(
                    self.path.resolve().as_uri() + "?mode=rw",
                    uri=True,
                    timeout=5.0,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                connection = sqlite3.connect(
                    self.path, timeout=5.0, isolation_level=None, check_same_thread=False
                )
            connection.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            log.error("tool.sql_connect_failed", error=str(exc), path=str(self.path))
            raise ToolError("the database is unavailable") from exc
        return connection

    def _release(self, connection: sqlite3.Connection, reusable: bool) -> None:
        # ``check_same_thread=False`` lets pooled connections move between worker threads; the
        # pool hands each to one thread at a time.
        with self._lock:
            if reusable and not self._closed and len(self._idle) < self._pool_size:
                self._idle.append(connection)
                return
        connection.close()

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            await asyncio.to_thread(connection.close)


def _fetch(cursor: sqlite3.Cursor, max_rows: int) -> Any:
    try:
        if cursor.description is None:
            return {"rows_affected": cursor.rowcount}
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchmany(max_rows)
        return [dict(zip(columns, row, strict=True)) for row in rows]
    finally:
        cursor.close()


def _consume(future: asyncio.Future[Any]) -> None:
    # A cancelled query's thread still finishes (with "interrupted"): retrieve that outcome so
    # asyncio does not report an exception nobody looked at.
    if not future.cancelled():
        future.exception()


class PostgresDatabase:
    """A PostgreSQL database through psycopg 3's asyncio connections, a few kept open."""

    def __init__(
        self, url: str, *, pool_size: int = _POOL_SIZE, max_connections: int = _MAX_CONNECTIONS
    ) -> None:
        self.url = url
        self._pool_size = pool_size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closed = False
        # Every call's tools share the database: bound the connections this process opens, or
        # many calls at once would exhaust the server's max_connections.
        self._slots = asyncio.Semaphore(max_connections)

    async def execute(self, query: ParsedQuery, params: Mapping[str, Any], max_rows: int) -> Any:
        async with self._slots:
            return await self._execute(query, params, max_rows)

    async def _execute(self, query: ParsedQuery, params: Mapping[str, Any], max_rows: int) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        connection = await self._acquire()
        reusable = False
        try:
            sql, values = query.pyformat.encode(), dict(params)
            async with connection.cursor(row_factory=dict_row) as cursor:
                if query.is_read:
                    rows: list[dict[str, Any]] = []
                    # stream() is an async generator (typed as an iterator): closing it early is
                    # what cancels the rest of the result server-side.
                    stream = cast(AsyncGenerator[dict[str, Any], None], cursor.stream(sql, values))
                    try:
                        async for row in stream:
                            rows.append(row)
                            if len(rows) >= max_rows:
                                break
                    finally:
                        await stream.aclose()
                    result: Any = rows
                else:
                    # stream() refuses statements without a result; a write (even with
                    # RETURNING) is as large as the configured statement makes it.
                    await cursor.execute(sql, values)
                    if cursor.description is None:
                        result = {"rows_affected": cursor.rowcount}
                    else:
                        result = await cursor.fetchmany(max_rows)
            reusable = True
            return result
        except psycopg.errors.IntegrityError as exc:
            log.info("tool.sql_constraint", error=str(exc))
            raise ToolError(CONSTRAINT_MESSAGE) from exc
        except psycopg.OperationalError as exc:
            log.error("tool.sql_failed", error=str(exc), database=_without_password(self.url))
            raise ToolError("the database is unavailable") from exc
        except psycopg.Error as exc:
            log.error("tool.sql_failed", error=str(exc), database=_without_password(self.url))
            raise ToolError(FAILURE_MESSAGE) from exc
        finally:
            await self._release(connection, reusable)

    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        try:
            import psycopg
        except ImportError as exc:
            raise ToolError("the database is unavailable") from exc
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        try:
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5
            )
        except psycopg.Error as exc:
            log.error(
                "tool.sql_connect_failed", error=str(exc), database=_without_password(self.url)
            )
            raise ToolError("the database is unavailable") from exc

    async def _release(self, connection: psycopg.AsyncConnection[Any], reusable: bool) -> None:
        from psycopg import pq

        idle = connection.info.transaction_status is pq.TransactionStatus.IDLE
        if reusable and idle and not self._closed and len(self._idle) < self._pool_size:
            self._idle.append(connection)
            return
        # A cancelled or failed connection may be mid-protocol: never reuse it.
        with contextlib.suppress(Exception):
            await connection.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.close()


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


class Databases:
    """The databases ``sql`` tools use, one pool per URL; ``None`` is the embedded CRM."""

    def __init__(self, crm_path: Path) -> None:
        self._crm = SqliteDatabase(crm_path, must_exist=True)
        self._by_url: dict[str, Database] = {}

    def get(self, url: str | None) -> Database:
        if url is None:
            return self._crm
        database = self._by_url.get(url)
        if database is None:
            if url.startswith("sqlite:///"):
                database = SqliteDatabase(Path(url.removeprefix("sqlite:///")))
            else:
                database = PostgresDatabase(url)
            self._by_url[url] = database
        return database

    async def close(self) -> None:
        for database in (self._crm, *self._by_url.values()):
            await database.close()
