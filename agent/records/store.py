"""Call records: who called, what was said and heard turn by turn, tools, usage, how it ended.

Records are written *as the call goes*, one small transaction per event, so a process killed
mid-call (SIGKILL, OOM, a lost node) keeps every turn completed before it died; at most the turn in
progress (not yet handed to the recorder) and whatever was still queued are lost. The server's
next start closes such a record (:meth:`RecordStore.close_crashed`: reason ``"bridge crashed"``)
once no other process can be running the call. The server also checks the store before it
starts (:meth:`RecordStore.check`), and :attr:`RecordStore.problem` says when writes are failing.

Writing never blocks the event loop. Each call gets a :class:`CallRecorder` whose methods only
build a tuple and put it on a bounded queue; one writer thread per store takes them off and commits
them. If the queue is full (the disk stalled) a write is dropped and counted, with a warning,
rather than stalling the audio pumps. ``await store.close()`` drains the queue.

Storage is SQL behind a small seam: the SQL is written once in the common subset of SQLite and
PostgreSQL (``ON CONFLICT``, ``DOUBLE PRECISION``, JSON as text), and a backend only says how to
connect, which placeholder it uses and how to begin a write. SQLite (stdlib ``sqlite3``, WAL mode)
is the default; PostgreSQL uses psycopg 3, an optional dependency (``pip install
'gemini-phone-agent[postgres]'``). Code that only needs "somewhere to put records" depends on the
:class:`CallRecordStore` protocol.

``DATABASE_URL`` forms::

    sqlite:///calls.db            relative path (the default is sqlite:///./calls.db)
    sqlite:////var/lib/agent.db   absolute path (four slashes)
    postgresql://user:pw@host/db  PostgreSQL (any libpq URL; postgres:// too)

Tables (one row per call, and its children keyed by ``call_sid``)::

    calls       call_sid PK, stream_sid, agent, from_number, to_number, started_at, ended_at,
                end_reason, summary (JSON)
    turns       (call_sid, idx) PK, role, said, heard, started_at, ended_at, interrupted
    tool_calls  (call_sid, seq) PK, call_id, name, arguments (JSON: as run), result (JSON),
                outcome, started_at, latency_ms, requested (JSON: as the model asked)
    call_usage  (call_sid, direction, modality) PK, tokens

Timestamps are wall-clock seconds since the epoch (``time.time()``), UTC when displayed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import structlog

from agent.errors import ConfigError
from agent.observability.privacy import (
    mask_number,
    mask_number_fields,
    mask_numbers_in_text,
    redact_fields,
)
from agent.records.backends import Backend, Connection, backend_from_url
from agent.records.migrations import migrate

log = structlog.get_logger("agent.records")

DEFAULT_DATABASE_URL = "sqlite:///./calls.db"
DEFAULT_QUEUE_SIZE = 10_000
#: After a failed write the store reports a problem (``/readyz`` unready) until a write succeeds,
#: or this long has passed with no write at all: an idle instance must become ready again, or the
#: next call (whose writes would show whether the database has healed) could never arrive.
FAILING_FOR_S = 30.0
#: Where several processes share the records (PostgreSQL replicas, ``--workers``), a call with no
#: ending is closed at start-up only once its last write is this old: Twilio's longest call
#: (4 h), so a call another process is running, or continuing after a failover, is never closed.
CRASH_HORIZON_S = 4 * 3600.0
CRASHED: Final = "bridge crashed"

Role = Literal["caller", "agent"]
#: ``refused``: never run (no such tool, arguments that fail the schema, too many running).
ToolOutcome = Literal["ok", "error", "timeout", "cancelled", "refused"]


# -- what a record holds ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn: what ``role`` said and, for the agent, what the caller actually heard.

    ``heard`` is shorter than ``said`` when the caller interrupted (barge-in) and None when
    unknown or not applicable.
    """

    index: int
    role: str
    said: str
    heard: str | None
    started_at: float
    ended_at: float
    interrupted: bool


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool call as it ran and as it ended (arguments and result redacted).

    ``arguments`` are what the tool ran with: the model's, checked, with bound parameters filled
    from the call (None if it never ran: ``outcome`` ``refused``). ``requested`` is what the
    model asked for, as it sent it, including any value it gave for a bound parameter, which was
    ignored (None in records written before this was kept).
    """

    call_id: str
    name: str
    arguments: Any
    result: Any
    outcome: str
    started_at: float
    latency_ms: float
    requested: Any = None


@dataclass(frozen=True, slots=True)
class CallSummaryRow:
    """One line of ``calls list``: enough to pick the call out."""

    call_sid: str
    agent: str | None
    from_number: str | None
    to_number: str | None
    started_at: float
    ended_at: float | None
    end_reason: str | None
    turns: int
    tool_calls: int

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A whole call, its turns ordered by index and its tool calls in the order they were made.

    ``ended_at`` is None for a call still running, or one whose process died before it ended.
    ``usage`` maps ``"<direction>_<modality>"`` (as given to :meth:`CallRecorder.usage`) to tokens.
    """

    call_sid: str
    stream_sid: str | None
    agent: str | None
    from_number: str | None
    to_number: str | None
    started_at: float
    ended_at: float | None
    end_reason: str | None
    summary: Mapping[str, Any]
    usage: Mapping[str, int]
    turns: tuple[Turn, ...] = ()
    tool_calls: tuple[ToolCallRecord, ...] = ()

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


# -- the seam -----------------------------------------------------------------------------------


class CallRecordStore(Protocol):
    """Where call records go: what the app and the CLI depend on, whatever the database."""

    def recorder(self, call_sid: str) -> CallRecorder:
        """A recorder for one call; its methods never block."""
        ...

    @property
    def closed(self) -> bool:
        """True once closing has begun (for readiness checks)."""
        ...

    @property
    def backlog(self) -> int:
        """Writes queued and not yet committed."""
        ...

    @property
    def problem(self) -> str | None:
        """Why records are not being written right now (for readiness), or None."""
        ...

    async def flush(self) -> None:
        """Wait until everything handed over so far is committed."""
        ...

    async def close(self) -> None:
        """Commit what is queued, then stop writing."""
        ...

    def list_calls(self, limit: int = 20) -> list[CallSummaryRow]:
        """The most recent calls first."""
        ...

    def get_call(self, call_sid: str) -> CallRecord | None:
        """One call with its turns and tool calls, or None."""
        ...

    def purge(self, older_than_s: float) -> int:
        """Delete calls started more than ``older_than_s`` ago; return how many."""
        ...

    def close_crashed(self, *, horizon_s: float, active: Collection[str] = ()) -> list[str]:
        """End the records of calls a crash left open; return their call SIDs."""
        ...


# -- helpers ------------------------------------------------------------------------------------


def database_url_from_env(env: Mapping[str, str] | None = None) -> str:
    """``DATABASE_URL`` from the environment, or the default ``sqlite:///./calls.db``."""
    env = os.environ if env is None else env
    return env.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def _to_json(value: Any) -> str:
    # default=str: a tool may return a datetime or a Decimal; the record should still be written.
    return json.dumps(value, ensure_ascii=False, default=str)


def _from_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- SQL, in the subset SQLite and PostgreSQL share ----------------------------------------------

# The tables themselves: agent.records.migrations, one ordered migration per change.

# A child row may reach the writer before its call's ``started`` (or without one, if that write
# was dropped): make sure the call exists so the child is never orphaned and invisible.
_ENSURE_CALL: Final = (
    "INSERT INTO calls (call_sid, started_at) VALUES (?, ?) ON CONFLICT (call_sid) DO NOTHING"
)
_STARTED: Final = """INSERT INTO calls
        (call_sid, stream_sid, agent, from_number, to_number, started_at)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (call_sid) DO UPDATE SET stream_sid = excluded.stream_sid,
        agent = excluded.agent, from_number = excluded.from_number,
        to_number = excluded.to_number,
        started_at = CASE WHEN calls.stream_sid IS NULL THEN excluded.started_at
            ELSE calls.started_at END"""
# (A call's second media stream, after a failover, keeps the call's start: one call, two legs.)
# A turn may be written again (e.g. corrected once playback proves how much was heard).
_TURN: Final = """INSERT INTO turns
        (call_sid, idx, role, said, heard, started_at, ended_at, interrupted)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (call_sid, idx) DO UPDATE SET role = excluded.role, said = excluded.said,
        heard = excluded.heard, started_at = excluded.started_at,
        ended_at = excluded.ended_at, interrupted = excluded.interrupted"""
_TOOL_CALL: Final = """INSERT INTO tool_calls
        (call_sid, seq, call_id, name, arguments, result, outcome, started_at, latency_ms,
        requested)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (call_sid, seq) DO NOTHING"""
_USAGE: Final = """INSERT INTO call_usage (call_sid, direction, modality, tokens)
    VALUES (?, ?, ?, ?)
    ON CONFLICT (call_sid, direction, modality) DO UPDATE SET tokens = excluded.tokens"""
_ENDED: Final = "UPDATE calls SET ended_at = ?, end_reason = ?, summary = ? WHERE call_sid = ?"

_LIST: Final = """SELECT c.call_sid, c.agent, c.from_number, c.to_number, c.started_at,
        c.ended_at, c.end_reason,
        (SELECT COUNT(*) FROM turns t WHERE t.call_sid = c.call_sid),
        (SELECT COUNT(*) FROM tool_calls x WHERE x.call_sid = c.call_sid)
    FROM calls c ORDER BY c.started_at DESC, c.call_sid LIMIT ?"""
_GET_CALL: Final = """SELECT call_sid, stream_sid, agent, from_number, to_number, started_at,
        ended_at, end_reason, summary FROM calls WHERE call_sid = ?"""
_GET_TURNS: Final = """SELECT idx, role, said, heard, started_at, ended_at, interrupted
    FROM turns WHERE call_sid = ? ORDER BY idx"""
_GET_TOOLS: Final = """SELECT call_id, name, arguments, result, outcome, started_at, latency_ms,
        requested FROM tool_calls WHERE call_sid = ? ORDER BY seq"""
_GET_USAGE: Final = """SELECT direction, modality, tokens FROM call_usage
    WHERE call_sid = ? ORDER BY direction, modality"""
_OLD_CALLS: Final = "SELECT call_sid FROM calls WHERE started_at < ?"
# Calls with no ending, and the last time anything of theirs was written that says when.
_OPEN_CALLS: Final = """SELECT c.call_sid, c.started_at,
        (SELECT MAX(t.ended_at) FROM turns t WHERE t.call_sid = c.call_sid),
        (SELECT MAX(x.started_at + x.latency_ms / 1000.0) FROM tool_calls x
            WHERE x.call_sid = c.call_sid)
    FROM calls c WHERE c.ended_at IS NULL"""
# Still no ending (the call's own ``ended`` may have arrived meanwhile): then close it.
_CLOSE_CRASHED: Final = """UPDATE calls SET ended_at = ?, end_reason = ?, summary = ?
    WHERE call_sid = ? AND ended_at IS NULL"""
# Children first, then the calls: all in one transaction.
_PURGE: Final = (
    *(
        f"DELETE FROM {table} WHERE call_sid IN (SELECT call_sid FROM calls WHERE started_at < ?)"
        for table in ("turns", "tool_calls", "call_usage")
    ),
    "DELETE FROM calls WHERE started_at < ?",
)

# One queued write: the statements of one transaction, each with its parameters.
_Statements = tuple[tuple[str, tuple[Any, ...]], ...]


@dataclass(frozen=True, slots=True)
class _Write:
    call_sid: str
    what: str  # for logs: started, turn, tool_call, usage, ended
    statements: _Statements


# Queue items that are not writes: a flush barrier, and the writer's stop signal.
_Barrier = concurrent.futures.Future[None]
_STOP: Final = object()


# -- the store ----------------------------------------------------------------------------------


class RecordStore:
    """Call records in SQL, written by one background thread from a bounded queue.

    Create it at start-up with :meth:`from_url` (it creates the tables: a quick, one-off blocking
    call), hand each call a :meth:`recorder`, and ``await close()`` at shutdown. The writer thread
    starts with the first write, so a store opened only to read (the CLI) starts no thread.

    Reads (:meth:`list_calls`, :meth:`get_call`) and :meth:`purge` are synchronous and open their
    own connection: they are for the CLI, or for ``asyncio.to_thread`` in a server.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        redact_fields: Iterable[str] = (),
        mask_caller_numbers: bool = False,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._backend = backend
        self.redact_fields = frozenset(name.lower() for name in redact_fields)
        self.mask_caller_numbers = mask_caller_numbers
        self._on_drop = on_drop
        self._queue: queue.Queue[_Write | _Barrier | object] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0
        """Writes lost so far: queue full, store closed, or the database refused them."""
        # The last write's failure (monotonic time, error), None once a write succeeds.
        self._failure: tuple[float, str] | None = None
        self.failing_for_s = FAILING_FOR_S
        """How long a failed write with none since stays a :attr:`problem`."""
        # The writes' statements in this backend's dialect, translated once.
        self._sql = {
            statement: backend.sql(statement)
            for statement in (_ENSURE_CALL, _STARTED, _TURN, _TOOL_CALL, _USAGE, _ENDED)
        }

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        redact_fields: Iterable[str] = (),
        mask_caller_numbers: bool = False,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_drop: Callable[[], None] | None = None,
        create: bool = True,
    ) -> RecordStore:
        """Open (and with ``create``, create) the store ``url`` names; ConfigError if it can't.

        ``redact_fields``: tool argument/result/summary keys whose values are stored as ``***``.
        ``mask_caller_numbers``: store the caller's number (``from``) masked, ``+1555****100``.
        ``on_drop``: called for each dropped write (e.g. a Prometheus counter's ``inc``).
        ``create=False`` (the CLI): a missing database is an error, not a new empty file.
        """
        backend = backend_from_url(url, create=create)
        store = cls(
            backend,
            redact_fields=redact_fields,
            mask_caller_numbers=mask_caller_numbers,
            queue_size=queue_size,
            on_drop=on_drop,
        )
        store._create_schema()
        if create:
            # Only the server checks: the CLI (create=False) should still read what it can of a
            # damaged file. A failing check stops start-up rather than serve calls without
            # records: a corrupt file does not heal by itself, every call would lose its record
            # while /readyz said ready, and a deploy that fails at once is what gets noticed
            # (restore the file, or move it aside to start afresh).
            store.check()
        return store

    def check(self) -> None:
        """Check the database (SQLite ``PRAGMA quick_check``, PostgreSQL a ``SELECT 1`` round
        trip); ConfigError naming what is wrong. Blocking: a one-off at start-up."""
        failures: tuple[type[Exception], ...] = (*self._backend.errors, OSError)
        try:
            with _closing(self._backend.connect()) as conn:
                problem = self._backend.check(conn)
        except failures as exc:
            problem = str(exc)
        if problem is not None:
            log.error("records.check_failed", location=self.location, problem=problem)
            raise ConfigError(
                f"call records at {self.location} failed their check: {problem} (restore the "
                "database from a backup, or move it aside to start with an empty one)",
                key="DATABASE_URL",
            )

    @property
    def location(self) -> str:
        """Where the records are (a path, or a URL without its password)."""
        return self._backend.location

    def recorder(self, call_sid: str) -> CallRecorder:
        """A recorder for one call. Cheap: make one per call."""
        return CallRecorder(
            call_sid,
            self._submit,
            redact_fields=self.redact_fields,
            mask_caller_numbers=self.mask_caller_numbers,
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun: writes are no longer accepted."""
        return self._closed

    @property
    def backlog(self) -> int:
        """Writes queued and not yet committed (approximate): a growing backlog means the
        database is slower than the calls; at the queue's size, writes are dropped."""
        return self._queue.qsize()

    @property
    def problem(self) -> str | None:
        """``"call records failing: <error>"`` while the most recent write failed (until a write
        succeeds, or :attr:`failing_for_s` passes without one), else None."""
        failure = self._failure
        if failure is None or time.monotonic() - failure[0] > self.failing_for_s:
            return None
        return f"call records failing: {failure[1]}"

    async def flush(self) -> None:
        """Wait until every write handed over before this call is committed (or dropped)."""
        with self._lock:
            if self._closed or self._thread is None:
                return
        barrier: _Barrier = concurrent.futures.Future()
        try:
            self._queue.put_nowait(barrier)
        except queue.Full:
            # A flush is rare and may wait for room; only the recorders must never wait.
            await asyncio.to_thread(self._queue.put, barrier)
        await asyncio.wrap_future(barrier)

    async def close(self) -> None:
        """Commit everything queued, then stop the writer. Later writes are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(thread.join)

    # -- reads and retention (synchronous) ------------------------------------------------------

    def list_calls(self, limit: int = 20) -> list[CallSummaryRow]:
        """The ``limit`` most recently started calls, newest first."""
        with _closing(self._backend.connect()) as conn:
            rows = conn.execute(self._backend.sql(_LIST), (limit,)).fetchall()
        return [
            CallSummaryRow(
                call_sid=r[0],
                agent=r[1],
                from_number=r[2],
                to_number=r[3],
                started_at=r[4],
                ended_at=r[5],
                end_reason=r[6],
                turns=int(r[7]),
                tool_calls=int(r[8]),
            )
            for r in rows
        ]

    def get_call(self, call_sid: str) -> CallRecord | None:
        """One call with its turns (by index) and tool calls (in the order made), or None."""
        sql = self._backend.sql
        with _closing(self._backend.connect()) as conn:
            row = conn.execute(sql(_GET_CALL), (call_sid,)).fetchone()
            if row is None:
                return None
            turns = conn.execute(sql(_GET_TURNS), (call_sid,)).fetchall()
            tools = conn.execute(sql(_GET_TOOLS), (call_sid,)).fetchall()
            usage = conn.execute(sql(_GET_USAGE), (call_sid,)).fetchall()
        summary = _from_json(row[8])
        return CallRecord(
            call_sid=row[0],
            stream_sid=row[1],
            agent=row[2],
            from_number=row[3],
            to_number=row[4],
            started_at=row[5],
            ended_at=row[6],
            end_reason=row[7],
            summary=summary if isinstance(summary, dict) else {},
            usage={_usage_key(d, m): int(n) for d, m, n in usage},
            turns=tuple(
                Turn(
                    index=t[0],
                    role=t[1],
                    said=t[2],
                    heard=t[3],
                    started_at=t[4],
                    ended_at=t[5],
                    interrupted=bool(t[6]),
                )
                for t in turns
            ),
            tool_calls=tuple(
                ToolCallRecord(
                    call_id=x[0],
                    name=x[1],
                    arguments=_from_json(x[2]),
                    result=_from_json(x[3]),
                    outcome=x[4],
                    started_at=x[5],
                    latency_ms=x[6],
                    requested=_from_json(x[7]),
                )
                for x in tools
            ),
        )

    def purge(self, older_than_s: float, *, now: float | None = None) -> int:
        """Delete calls (and their turns, tools, usage) started more than ``older_than_s`` seconds
        before ``now`` (default: the current time); return how many calls went."""
        cutoff = (time.time() if now is None else now) - older_than_s
        sql = self._backend.sql
        with _closing(self._backend.connect()) as conn:
            conn.execute(self._backend.begin())
            try:
                count = len(conn.execute(sql(_OLD_CALLS), (cutoff,)).fetchall())
                for statement in _PURGE:
                    conn.execute(sql(statement), (cutoff,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return count

    def close_crashed(
        self,
        *,
        horizon_s: float,
        active: Collection[str] = (),
        now: float | None = None,
    ) -> list[str]:
        """End the records a crash left open (no ``ended`` was ever written): reason
        ``"bridge crashed"``, ended at the last known time (the last turn's end, or tool call's,
        else the start). Only calls whose last known time is more than ``horizon_s`` before
        ``now`` and that are not in ``active`` (this process's calls) are closed, so a call that
        another process sharing the database is running is left alone. Returns the SIDs closed.

        A call closed here that goes on after all (its record is written again) is not harmed:
        its real ``ended`` replaces the crash's. Blocking: for start-up, in a thread.
        """
        cutoff = (time.time() if now is None else now) - horizon_s
        sql = self._backend.sql
        closed: list[str] = []
        with _closing(self._backend.connect()) as conn:
            rows = conn.execute(sql(_OPEN_CALLS)).fetchall()
            for call_sid, started_at, last_turn, last_tool in rows:
                if call_sid in active:
                    continue
                last = max(t for t in (started_at, last_turn, last_tool) if t is not None)
                if last >= cutoff:
                    continue
                summary = _to_json({"closed_at_start_up": round(time.time(), 3)})
                cursor = conn.execute(sql(_CLOSE_CRASHED), (last, CRASHED, summary, call_sid))
                if cursor.rowcount:
                    closed.append(call_sid)
                    log.warning("records.crashed_call_closed", call_sid=call_sid, ended_at=last)
        if rows:
            log.info(
                "records.crashed_calls_checked",
                open=len(rows),
                closed=len(closed),
                horizon_s=horizon_s,
            )
        return closed

    # -- the write path -------------------------------------------------------------------------

    def _submit(self, write: _Write) -> None:
        """Queue ``write`` without ever waiting; drop it (counted) when that is impossible."""
        if self._closed:
            self._drop(write, "store closed")
            return
        if self._thread is None:
            self._start_writer()
        try:
            self._queue.put_nowait(write)
        except queue.Full:
            self._drop(write, "queue full")

    def _start_writer(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run_writer, name="call-records-writer", daemon=True
                )
                self._thread.start()

    def _drop(self, write: _Write, reason: str) -> None:
        with self._lock:
            self.dropped += 1
            dropped = self.dropped
        if self._on_drop is not None:
            self._on_drop()
        log.warning(
            "records.write_dropped",
            reason=reason,
            call_sid=write.call_sid,
            record=write.what,
            dropped_total=dropped,
        )

    def _run_writer(self) -> None:
        # Daemon thread: if the process dies without close(), the database's journal keeps it
        # consistent and only the queued writes are lost.
        conn: Connection | None = None
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                if isinstance(item, concurrent.futures.Future):
                    item.set_result(None)
                elif isinstance(item, _Write):
                    conn = self._write(conn, item)
        finally:
            if conn is not None:
                conn.close()

    def _write(self, conn: Connection | None, write: _Write) -> Connection | None:
        """One record, one transaction, committed before the next is taken off the queue.

        Returns the connection to use next: after a failure it is dropped and the next write
        reconnects, so a restarted database server or a moment of full disk heals by itself.
        """
        try:
            if conn is None:
                conn = self._backend.connect()
            conn.execute(self._backend.begin())
            try:
                for statement, params in write.statements:
                    conn.execute(self._sql[statement], params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except Exception as exc:
            # The writer must outlive any failure: log it, count the lost record, carry on.
            log.error("records.write_failed", error=repr(exc), call_sid=write.call_sid)
            self._failure = (time.monotonic(), str(exc) or type(exc).__name__)
            self._drop(write, "database error")
            if conn is not None:
                _close_quietly(conn)
            return None
        if self._failure is not None:
            log.info("records.write_recovered")
            self._failure = None
        return conn

    def _create_schema(self) -> None:
        """Create the tables, or bring an older database's up to date (see
        :mod:`agent.records.migrations`)."""
        failures: tuple[type[Exception], ...] = (*self._backend.errors, OSError)
        try:
            with _closing(self._backend.connect()) as conn:
                migrate(self._backend, conn)
        except failures as exc:
            raise ConfigError(
                f"cannot open call records at {self.location}: {exc}", key="DATABASE_URL"
            ) from exc


def _close_quietly(conn: Connection) -> None:
    try:
        conn.close()
    except Exception as exc:  # a broken connection may fail to close; it is gone either way
        log.debug("records.close_failed", error=repr(exc))


def _usage_key(direction: str, modality: str) -> str:
    return f"{direction}_{modality}" if modality else direction


class _closing:  # noqa: N801 (used like contextlib.closing, which mypy can't type for a Protocol)
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __enter__(self) -> Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


# -- the per-call recorder ----------------------------------------------------------------------


def _discard(write: _Write) -> None:
    pass


@dataclass(slots=True)
class CallRecorder:
    """Records one call as it happens. Every method is cheap and non-blocking: it prepares the
    row (redaction and JSON happen here, so a caller's later mutation cannot change the record)
    and hands it to ``submit`` (the store's queue). Get one from :meth:`RecordStore.recorder`,
    or :meth:`discarding` where a call needs no record (tests, tools run offline)."""

    call_sid: str
    _submit_write: Callable[[_Write], None]
    redact_fields: frozenset[str] = frozenset()
    mask_caller_numbers: bool = False
    _tool_seq: int = field(default=0)

    @classmethod
    def discarding(cls, call_sid: str) -> CallRecorder:
        """A recorder that keeps nothing."""
        return cls(call_sid, _discard)

    def started(
        self,
        *,
        call_sid: str,
        stream_sid: str,
        agent: str,
        from_number: str | None,
        to_number: str | None,
        started_at: float,
    ) -> None:
        """The call was answered. The numbers are masked when the store is so configured."""
        if self.mask_caller_numbers:
            from_number = mask_number(from_number) if from_number else from_number
            to_number = mask_number(to_number) if to_number else to_number
        params = (call_sid, stream_sid, agent, from_number, to_number, started_at)
        self._submit("started", ((_STARTED, params),))

    def turn(
        self,
        *,
        index: int,
        role: Role,
        said: str,
        heard: str | None,
        started_at: float,
        ended_at: float,
        interrupted: bool,
    ) -> None:
        """A completed turn. Writing the same ``index`` again replaces it. With numbers masked,
        any number said in the turn is masked too."""
        if self.mask_caller_numbers:
            said = mask_numbers_in_text(said)
            heard = mask_numbers_in_text(heard) if heard is not None else None
        params = (self.call_sid, index, role, said, heard, started_at, ended_at, int(interrupted))
        self._submit("turn", ((_ENSURE_CALL, (self.call_sid, started_at)), (_TURN, params)))

    def tool_call(
        self,
        *,
        call_id: str,
        name: str,
        arguments: Any,
        result: Any,
        outcome: ToolOutcome | str,
        started_at: float,
        latency_ms: float,
        requested: Any = None,
    ) -> None:
        """A finished (or refused) tool call: ``arguments`` as the tool ran with them (bound
        values applied; None if it never ran), ``requested`` as the model asked. Fields named
        in ``redact_fields`` are stored as ``***`` in both."""
        fields = self.redact_fields
        if self.mask_caller_numbers:
            # Arguments and results carry numbers too (a CRM row, a number the model tried).
            arguments, result = mask_number_fields(arguments), mask_number_fields(result)
            requested = mask_number_fields(requested)
        seq = self._tool_seq
        self._tool_seq += 1
        params = (
            self.call_sid,
            seq,
            call_id,
            name,
            _to_json(redact_fields(arguments, fields)),
            _to_json(redact_fields(result, fields)),
            outcome,
            started_at,
            latency_ms,
            None if requested is None else _to_json(redact_fields(requested, fields)),
        )
        self._submit(
            "tool_call", ((_ENSURE_CALL, (self.call_sid, started_at)), (_TOOL_CALL, params))
        )

    def usage(self, tokens: Mapping[str, int]) -> None:
        """The call's token totals so far, keyed ``<direction>_<modality>`` (``prompt_audio``,
        ``response_text``, as ``CallStats.usage`` keeps them). Replaces earlier totals, so
        calling it after every usage report keeps the record current should the process die."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for key, count in tokens.items():
            direction, _, modality = key.partition("_")
            statements.append((_USAGE, (self.call_sid, direction, modality, int(count))))
        if statements:
            self._submit("usage", tuple(statements))

    def ended(self, *, reason: str, ended_at: float, summary: Mapping[str, object]) -> None:
        """The call ended: why, when, and its summary (counters, timings), redacted like tools."""
        summary_json = _to_json(redact_fields(dict(summary), self.redact_fields))
        self._submit(
            "ended",
            (
                (_ENSURE_CALL, (self.call_sid, ended_at)),
                (_ENDED, (ended_at, reason, summary_json, self.call_sid)),
            ),
        )

    def _submit(self, what: str, statements: _Statements) -> None:
        self._submit_write(_Write(self.call_sid, what, statements))
