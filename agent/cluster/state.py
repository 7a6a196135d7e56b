"""The state replicas share: which stream tickets have been used, and every call in progress.

A call in progress is a :class:`CallSnapshot`: who is calling, which agent answers, the newest
Live resumption handle and the conversation so far (what was said, and what the caller heard).
When a call's media stream ends while the call is still up (its replica died, its socket dropped,
or its replica handed it over on the way down), Twilio asks the ``<Connect action>`` URL what to
do; whichever replica answers continues the call from its snapshot.

Two implementations behind :class:`SharedState`:

* :class:`LocalState`, one process's memory: a single instance works exactly as it always has.
* :class:`SqlState`, a table in SQLite or PostgreSQL (the call records' backends): every replica
  pointed at the same database refuses a ticket any of them has accepted, and a replica that
  pre-connected a Live session for a call can see that another replica took the call's stream,
  and release its session at once instead of letting it time out.

Each operation happens once per call (or once per poll for pending pre-connects), never on the
per-frame path. SQL runs on one dedicated thread with one connection, so the event loop never waits
on the database and the connection is never shared between threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol, TypeVar

from agent.errors import SharedStateError
from agent.records.backends import Backend, Connection, backend_from_url
from agent.telephony.webhooks import StreamTicket, UsedNonces

__all__ = [
    "CallSnapshot",
    "LocalState",
    "SavedTurn",
    "SharedState",
    "SqlState",
    "shared_state_from_url",
]

T = TypeVar("T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS stream_tickets (
        nonce TEXT PRIMARY KEY,
        call_sid TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        claimed_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS stream_tickets_call_sid ON stream_tickets (call_sid)",
    """CREATE TABLE IF NOT EXISTS webhook_answers (
        key TEXT PRIMARY KEY,
        answer TEXT NOT NULL,
        answered_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS calls_in_progress (
        call_sid TEXT PRIMARY KEY,
        snapshot TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
)
# A webhook's first answer is kept this long: Twilio's retries come within seconds, and a replay
# after that finds its ticket expired anyway.
_ANSWER_KEEP_S: Final = 3600.0
# A call's snapshot is kept this long after its last change: no call is silent that long, and a
# <Connect action> for a call that old finds nothing and starts afresh.
_SNAPSHOT_KEEP_S: Final = 6 * 3600.0
# Used tickets are kept this long past their expiry (the expiry check alone rejects them then):
# long enough for a replica to notice that another one took its pre-connected call.
_KEEP_S: Final = 600.0
# Delete expired rows once per this many claims, not on every one.
_PRUNE_EVERY: Final = 100


@dataclass(frozen=True, slots=True)
class SavedTurn:
    """One turn of the conversation, as a continued call needs it."""

    role: str  # "caller" or "agent"
    said: str
    heard: str  # the agent's words the caller heard (all of them, unless interrupted)
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class CallSnapshot:
    """A call in progress, as another replica needs it to continue the call."""

    call_sid: str
    agent: str
    from_number: str | None = None
    to_number: str | None = None
    caller_verified: bool = False
    leg: int = 1  # which media stream of the call wrote this (1: the first)
    handle: str | None = None  # the newest resumable Live handle
    turns: tuple[SavedTurn, ...] = ()
    ended: bool = False  # the bridge ended the call: its action request gets <Hangup/>
    # The stream was let go at a quiet moment (a handover): the model owes nothing, so the next
    # stream just listens; otherwise the model is told where the caller was cut off.
    quiet: bool = False
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # room for later fields, kept as is

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CallSnapshot:
        data = json.loads(text)
        data["turns"] = tuple(SavedTurn(**turn) for turn in data.get("turns", ()))
        names = {f.name for f in dataclasses.fields(cls)}
        known = {name: value for name, value in data.items() if name in names}
        return cls(**known)

    @property
    def last_heard(self) -> str:
        """The agent's words the caller heard last (what to pick the conversation up from)."""
        for turn in reversed(self.turns):
            if turn.role == "agent" and turn.heard.strip():
                return turn.heard.strip()
        return ""


class SharedState(Protocol):
    """Where used stream tickets and calls in progress are remembered."""

    @property
    def shared(self) -> bool:
        """Whether other processes see this state (False: this process only)."""
        ...

    async def claim_ticket(self, ticket: StreamTicket, now: float) -> bool:
        """Mark ``ticket`` used; False if any replica already used it."""
        ...

    async def streams_started(self, call_sids: Collection[str]) -> set[str]:
        """Which of these calls have had a stream accepted (by any replica)."""
        ...

    async def save_call(self, snapshot: CallSnapshot) -> None:
        """Remember ``snapshot`` (replacing the call's previous one)."""
        ...

    async def answer_once(self, key: str, answer: str, now: float) -> str:
        """The first answer any replica gave under ``key`` (``answer`` if this is the first):
        a webhook Twilio retries, or one replayed, gets the same TwiML, and so the same
        single-use ticket, never a second one."""
        ...

    async def load_call(self, call_sid: str) -> CallSnapshot | None:
        """The call's newest snapshot, if any replica saved one."""
        ...

    async def peek_answer(self, key: str) -> str | None:
        """The answer kept under ``key`` by :meth:`answer_once`, if any (never writes): how an
        outbound call's plan and its answering-machine verdict, written by whichever replica
        Twilio's request reached, are read by the replica holding the call's stream."""
        ...

    async def close(self) -> None: ...


class LocalState:
    """This process's memory: tickets work once here; nothing is shared."""

    shared = False

    def __init__(self) -> None:
        self._used = UsedNonces()
        self._calls: dict[str, CallSnapshot] = {}
        self._answers: dict[str, tuple[str, float]] = {}

    async def answer_once(self, key: str, answer: str, now: float) -> str:
        horizon = now - _ANSWER_KEEP_S
        for old in [k for k, (_, at) in self._answers.items() if at < horizon]:
            del self._answers[old]
        first, _ = self._answers.setdefault(key, (answer, now))
        return first

    async def save_call(self, snapshot: CallSnapshot) -> None:
        # Memory is bounded by pruning: snapshots older than the longest call go.
        horizon = snapshot.updated_at - _SNAPSHOT_KEEP_S
        for sid in [sid for sid, old in self._calls.items() if old.updated_at < horizon]:
            del self._calls[sid]
        self._calls[snapshot.call_sid] = snapshot

    async def load_call(self, call_sid: str) -> CallSnapshot | None:
        return self._calls.get(call_sid)

    async def peek_answer(self, key: str) -> str | None:
        kept = self._answers.get(key)
        return None if kept is None else kept[0]

    async def claim_ticket(self, ticket: StreamTicket, now: float) -> bool:
        return self._used.claim(ticket, now)

    async def streams_started(self, call_sids: Collection[str]) -> set[str]:
        # A stream accepted here already took its pre-connect: nothing else to report.
        return set()

    async def close(self) -> None:
        return None


class SqlState:
    """Used tickets in a table every replica can reach (SQLite for the workers of one machine,
    PostgreSQL for replicas on many)."""

    shared = True

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._conn: Connection | None = None
        self._claims = 0
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="shared-state"
        )

    @property
    def location(self) -> str:
        return self._backend.location

    async def open(self) -> None:
        """Connect and create the table, so a wrong URL fails at start-up, not on a call."""
        await self._run(lambda conn: None)

    async def claim_ticket(self, ticket: StreamTicket, now: float) -> bool:
        def claim(conn: Connection) -> bool:
            self._claims += 1
            if self._claims % _PRUNE_EVERY == 0:
                conn.execute(
                    self._backend.sql("DELETE FROM stream_tickets WHERE expires_at < ?"),
                    (now - _KEEP_S,),
                )
            cursor = conn.execute(
                self._backend.sql(
                    "INSERT INTO stream_tickets (nonce, call_sid, expires_at, claimed_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (nonce) DO NOTHING"
                ),
                (ticket.nonce, ticket.call_sid, ticket.expires_ms / 1000.0, now),
            )
            return cursor.rowcount == 1

        return await self._run(claim)

    async def streams_started(self, call_sids: Collection[str]) -> set[str]:
        wanted = list(call_sids)
        if not wanted:
            return set()

        def query(conn: Connection) -> set[str]:
            marks = ", ".join("?" for _ in wanted)
            rows = conn.execute(
                self._backend.sql(
                    f"SELECT DISTINCT call_sid FROM stream_tickets WHERE call_sid IN ({marks})"
                ),
                wanted,
            ).fetchall()
            return {str(row[0]) for row in rows}

        return await self._run(query)

    async def save_call(self, snapshot: CallSnapshot) -> None:
        def save(conn: Connection) -> None:
            conn.execute(
                self._backend.sql(
                    "INSERT INTO calls_in_progress (call_sid, snapshot, updated_at) "
                    "VALUES (?, ?, ?) ON CONFLICT (call_sid) DO UPDATE SET "
                    "snapshot = excluded.snapshot, updated_at = excluded.updated_at"
                ),
                (snapshot.call_sid, snapshot.to_json(), snapshot.updated_at),
            )
            if self._claims % _PRUNE_EVERY == 0:
                conn.execute(
                    self._backend.sql("DELETE FROM calls_in_progress WHERE updated_at < ?"),
                    (snapshot.updated_at - _SNAPSHOT_KEEP_S,),
                )

        await self._run(save)

    async def answer_once(self, key: str, answer: str, now: float) -> str:
        def answer_once(conn: Connection) -> str:
            self._claims += 1
            if self._claims % _PRUNE_EVERY == 0:
                conn.execute(
                    self._backend.sql("DELETE FROM webhook_answers WHERE answered_at < ?"),
                    (now - _ANSWER_KEEP_S,),
                )
            conn.execute(
                self._backend.sql(
                    "INSERT INTO webhook_answers (key, answer, answered_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO NOTHING"
                ),
                (key, answer, now),
            )
            row = conn.execute(
                self._backend.sql("SELECT answer FROM webhook_answers WHERE key = ?"), (key,)
            ).fetchone()
            return answer if row is None else str(row[0])

        return await self._run(answer_once)

    async def peek_answer(self, key: str) -> str | None:
        def peek(conn: Connection) -> str | None:
            row = conn.execute(
                self._backend.sql("SELECT answer FROM webhook_answers WHERE key = ?"), (key,)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(peek)

    async def load_call(self, call_sid: str) -> CallSnapshot | None:
        def load(conn: Connection) -> CallSnapshot | None:
            row = conn.execute(
                self._backend.sql("SELECT snapshot FROM calls_in_progress WHERE call_sid = ?"),
                (call_sid,),
            ).fetchone()
            return None if row is None else CallSnapshot.from_json(str(row[0]))

        return await self._run(load)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown(wait=True)

    def _disconnect(self) -> None:
        if self._conn is not None:
            # Closing a broken connection loses nothing: every write was its own commit.
            with contextlib.suppress(*self._backend.errors):
                self._conn.close()
            self._conn = None

    async def _run(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._with_connection, work)

    def _with_connection(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on the thread's connection, reconnecting once if it went away (a
        database restart must not make every later call fail)."""
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    conn = self._backend.connect()
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    self._conn = conn
                return work(self._conn)
            except self._backend.errors as exc:
                self._disconnect()
                if attempt == 2:
                    raise SharedStateError(
                        f"shared state at {self._backend.location}: {exc}"
                    ) from exc
        raise AssertionError("unreachable")


async def shared_state_from_url(url: str | None) -> SharedState:
    """:class:`LocalState` without a URL; else an open :class:`SqlState` on that database."""
    if not url:
        return LocalState()
    state = SqlState(backend_from_url(url, create=True, key="SHARED_STATE_URL"))
    try:
        await state.open()
    except BaseException:
        await state.close()
        raise
    return state
