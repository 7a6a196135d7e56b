"""``agent calls``: find a recorded call and read what happened, turn by turn.

agent calls list [--limit N]           recent calls, newest first: when, how long, who, the ending
agent calls show CALL_SID              one call: turns (said / heard, where a barge-in cut the
                                       agent off), tool calls with arguments, result and latency,
                                       usage, timings, ending
agent calls purge --older-than-days D  retention: delete calls started more than D days ago

The database is ``DATABASE_URL`` (default ``sqlite:///./calls.db``), the server's. Times are UTC,
like the server's log lines, so a call can be matched to its logs by eye.

The command functions return text and take the store, so tests call them without a process.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from datetime import UTC, datetime
from typing import Any

from agent.records.store import (
    CallRecord,
    CallRecordStore,
    RecordStore,
    ToolCallRecord,
    Turn,
    database_url_from_env,
)

WIDTH = 100
INDENT = " " * 6
LABEL_WIDTH = len("unheard:")
CUT = "[--cut--]"


def list_command(store: CallRecordStore, limit: int = 20) -> str:
    """A table of the ``limit`` most recent calls, newest first; an unended call shows ``-``."""
    rows = store.list_calls(limit)
    if not rows:
        return "no calls recorded"
    table = [("STARTED (UTC)", "DURATION", "CALL SID", "AGENT", "FROM", "TURNS", "TOOLS", "ENDING")]
    for row in rows:
        table.append(
            (
                _time(row.started_at),
                _duration(row.duration_s),
                row.call_sid,
                row.agent or "-",
                row.from_number or "-",
                str(row.turns),
                str(row.tool_calls),
                row.end_reason or _NOT_ENDED,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def show_command(store: CallRecordStore, call_sid: str) -> str:
    """One call in full, in the order it happened; a short message if there is no such call."""
    call = store.get_call(call_sid)
    if call is None:
        return f"no call {call_sid!r} recorded"
    return "\n".join(_render_call(call))


_NOT_ENDED = "(no ending recorded: still running, or the process died)"


def conversation_lines(call: CallRecord) -> list[str]:
    """The call as a conversation: who said what (for the agent, what the caller heard of it),
    each tool called with its outcome, in order, and how it ended. What ``agent call`` prints."""
    events: list[tuple[float, list[str]]] = []
    for turn in call.turns:
        text = turn.said
        if turn.role == "agent" and turn.interrupted and turn.heard is not None:
            text = f"{turn.heard} {CUT}".lstrip()
        label = "agent:" if turn.role == "agent" else "caller:"
        events.append((turn.started_at, _wrap(label, text or "(nothing)")))
    for tool in call.tool_calls:
        shown = tool.arguments if tool.arguments is not None else tool.requested
        events.append(
            (
                tool.started_at,
                _wrap("tool:", f"{tool.name}({_compact(shown)}) -> {tool.outcome}"),
            )
        )
    # Stable: a tool call started in the same instant as a turn follows it.
    lines = [line for _, block in sorted(events, key=lambda e: e[0]) for line in block]
    if call.ended_at is None:
        lines.extend(_wrap("ended:", _NOT_ENDED))
    else:
        lines.extend(
            _wrap("ended:", f"{call.end_reason or '-'} after {_duration(call.duration_s)}")
        )
    return lines


def _render_call(call: CallRecord) -> list[str]:
    lines = [f"call {call.call_sid}"]
    lines.append(f"  agent     {call.agent or '-'}")
    lines.append(f"  stream    {call.stream_sid or '-'}")
    lines.append(f"  from      {call.from_number or '-'}")
    lines.append(f"  to        {call.to_number or '-'}")
    lines.append(f"  started   {_time(call.started_at, precise=True)}")
    if call.ended_at is None:
        lines.append(f"  ended     {_NOT_ENDED}")
    else:
        lines.append(
            f"  ended     {_time(call.ended_at, precise=True)}"
            f"  after {_duration(call.duration_s)}  reason: {call.end_reason or '-'}"
        )

    lines.append("")
    lines.append(f"turns ({len(call.turns)}) and tool calls ({len(call.tool_calls)})")
    if not call.turns and not call.tool_calls:
        lines.append("  (none recorded)")
    # Tool calls go where they happened: before the first turn that started after them.
    tools = sorted(call.tool_calls, key=lambda t: t.started_at)
    pending = list(tools)
    for turn in call.turns:
        while pending and pending[0].started_at < turn.started_at:
            lines.extend(_render_tool(pending.pop(0), call.started_at))
        lines.extend(_render_turn(turn, call.started_at))
    for tool in pending:
        lines.extend(_render_tool(tool, call.started_at))

    lines.append("")
    lines.append("usage (tokens)")
    if call.usage:
        width = max(len(key) for key in call.usage)
        lines.extend(f"  {key.ljust(width)}  {count:>9,}" for key, count in call.usage.items())
    else:
        lines.append("  (none recorded)")

    if call.summary:
        lines.append("")
        lines.append("summary")
        width = max(len(str(key)) for key in call.summary)
        for key, value in call.summary.items():
            lines.append(f"  {str(key).ljust(width)}  {_compact(value)}")
    return lines


def _render_turn(turn: Turn, call_start: float) -> list[str]:
    took = turn.ended_at - turn.started_at
    flags = "  INTERRUPTED" if turn.interrupted else ""
    head = (
        f"  #{turn.index:<3} {_offset(turn.started_at, call_start)}  {turn.role:<6}"
        f" ({took:.1f}s){flags}"
    )
    lines = [head, *_wrap("said:", turn.said)]
    if turn.role == "agent" and (turn.interrupted or turn.heard != turn.said):
        lines.extend(_render_heard(turn))
    elif turn.heard is not None and turn.heard != turn.said:
        # A caller turn: what the model's transcription made of it, when it differs.
        lines.extend(_wrap("heard:", turn.heard))
    return lines


def _render_heard(turn: Turn) -> list[str]:
    """What the caller heard of an agent turn, marking where a barge-in cut it off."""
    if turn.heard is None:
        return _wrap("heard:", "(unknown)")
    if not turn.interrupted:
        return _wrap("heard:", turn.heard)
    lines = _wrap("heard:", f"{turn.heard} {CUT}".lstrip())
    said, heard = turn.said, turn.heard
    if said.startswith(heard):
        rest = said[len(heard) :].strip()
        if rest:
            lines.extend(_wrap("unheard:", rest))
    return lines


def _render_tool(tool: ToolCallRecord, call_start: float) -> list[str]:
    lines = [
        f"  tool {_offset(tool.started_at, call_start)}  {tool.name}  {tool.outcome}"
        f"  {tool.latency_ms:.0f} ms  (id {tool.call_id})"
    ]
    if tool.arguments is not None or tool.requested is None:
        lines.extend(_wrap("args:", _compact(tool.arguments)))
    if tool.requested is not None and tool.requested != tool.arguments:
        # What the model asked for, where it differs from what ran: a value it gave for a
        # bound parameter (ignored), or the whole request of a call that was refused.
        lines.extend(_wrap("asked:", _compact(tool.requested)))
    lines.extend(_wrap("result:", _compact(tool.result)))
    return lines


def _wrap(label: str, text: str) -> list[str]:
    """``label`` and ``text`` wrapped to :data:`WIDTH`, continuation lines under the text."""
    label = label.ljust(LABEL_WIDTH)
    return textwrap.wrap(
        text or "(empty)",
        width=WIDTH,
        initial_indent=f"{INDENT}{label} ",
        subsequent_indent=INDENT + " " * (len(label) + 1),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [f"{INDENT}{label}"]


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _time(epoch_s: float, *, precise: bool = False) -> str:
    moment = datetime.fromtimestamp(epoch_s, UTC)
    if precise:
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _offset(at: float, call_start: float) -> str:
    """Seconds into the call, the way an on-call engineer lines it up with a recording."""
    return f"+{max(0.0, at - call_start):.1f}s".rjust(8)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(max(0.0, seconds), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{int(hours)}h{int(minutes):02d}m{int(secs):02d}s"
    if minutes:
        return f"{int(minutes)}m{secs:04.1f}s"
    return f"{secs:.1f}s"


# -- argparse wiring ----------------------------------------------------------------------------


def add_calls_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``calls list | show | purge`` to the ``agent`` command's subparsers.

    Each action sets ``run`` (``args.run(args) -> int``), the convention of ``agent.cli.main``.
    """
    calls = subparsers.add_parser(
        "calls",
        help="inspect recorded calls (DATABASE_URL)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    actions = calls.add_subparsers(required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="recent calls, newest first")
    listing.add_argument("--limit", type=_positive_int, default=20, help="how many (default 20)")
    listing.set_defaults(run=_run_list)

    show = actions.add_parser("show", help="one call, turn by turn")
    show.add_argument("call_sid", metavar="CALL_SID", help="the call's CallSid (CA...)")
    show.set_defaults(run=_run_show)

    purge = actions.add_parser("purge", help="delete old calls (retention)")
    purge.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        metavar="D",
        help="delete calls started more than D days ago",
    )
    purge.set_defaults(run=_run_purge)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _open_store() -> RecordStore:
    # create=False: a typo in DATABASE_URL should say "no records there", not make an empty db.
    return RecordStore.from_url(database_url_from_env(), create=False)


def _run_list(args: argparse.Namespace) -> int:
    print(list_command(_open_store(), args.limit))
    return 0


def _run_show(args: argparse.Namespace) -> int:
    store = _open_store()
    call = store.get_call(args.call_sid)
    if call is None:
        print(f"agent: no call {args.call_sid!r} in {store.location}", file=sys.stderr)
        return 1
    print("\n".join(_render_call(call)))
    return 0


def _run_purge(args: argparse.Namespace) -> int:
    if args.older_than_days < 0:
        print("agent: --older-than-days must not be negative", file=sys.stderr)
        return 2
    store = _open_store()
    count = store.purge(args.older_than_days * 86_400)
    print(f"purged {count} call(s) started more than {args.older_than_days:g} day(s) ago")
    return 0
