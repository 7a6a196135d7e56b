"""Prometheus metrics for the bridge: one :class:`Metrics` per app, rendered at ``GET /metrics``.

Every metric lives in the ``Metrics`` object's own ``CollectorRegistry`` (never the library's global
one), so an app built in a test has fresh counters and two apps in one process do not collide.

Under ``agent serve --workers N`` a scrape reaches whichever worker the kernel picks, so each
one must answer for the whole machine. The supervisor then sets ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode): every worker writes its values to files there, and
``/metrics`` on any worker sums them (prometheus_client's ``MultiProcessCollector``);
``agent_active_calls`` is the sum over the workers alive. Process collectors (memory, CPU) are
per process and left out in that mode.

Label values are kept to fixed, small sets: a Prometheus series exists per label combination
forever, so a free-text reason (an exception message, a close reason) would grow the server's
memory with every new string. The ``count_*`` / ``observe_*`` methods normalise what they are given
(``"caller hung up"`` -> ``caller_hung_up``; anything unknown -> ``other``) and are the way to
update labelled metrics; the metric attributes are public for reading and for tests.

The per-frame path (about 100 frames a second per call, both directions) must not pay for a
Prometheus update on every frame (each one takes a lock and, for a histogram, walks its buckets).
It uses a :class:`FrameTimer` instead: plain ``int`` counters on the call's own object, one frame in
``N`` timed, and the totals pushed into Prometheus at most once a second and at the call's end::

    timer = metrics.frame_timer()          # one per call
    t = timer.start()                      # 0 for N-1 frames out of N: no clock read
    pcm = inbound.process(event.payload)   # the synchronous work being measured
    timer.inbound(t)                       # count it; time it when it was sampled
    await live.send_audio(pcm)             # awaits are not timed: they include other tasks
    ...
    timer.flush()                          # at the call's end (a ``finally``)

Metric names (all prefixed ``agent_``):

| metric                                   | type      | labels              |
|------------------------------------------|-----------|---------------------|
| agent_active_calls                       | gauge     |                     |
| agent_calls_total                        | counter   | agent, reason       |
| agent_frames_total                       | counter   | direction (in, out) |
| agent_frame_processing_seconds           | histogram | direction (in, out) |
| agent_live_connect_seconds               | histogram |                     |
| agent_live_reconnects_total              | counter   | reason              |
| agent_live_connect_failures_total        | counter   | reason              |
| agent_interruptions_total                | counter   |                     |
| agent_tool_latency_seconds               | histogram | tool, outcome       |
| agent_tokens_total                       | counter   | direction, modality |
| agent_call_records_dropped_total         | counter   |                     |
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

log = structlog.get_logger("agent.metrics")

#: prometheus_client's switch to multiprocess mode (set by the ``--workers`` supervisor).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# The classic text format (0.0.4) that every Prometheus server and agent reads; our names are all
# legacy-valid, so the body is the same whichever version the client library calls "latest".
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

OTHER = "other"

#: Why calls end (``agent_calls_total{reason}``): CallSession's ending reasons, normalised
#: ("caller hung up" -> caller_hung_up), plus shutdown for calls closed by a server drain.
CALL_END_REASONS = frozenset(
    {
        "caller_hung_up",
        "agent_ended",
        "transferred",
        "timed_out",
        "cost_limit",  # max_call_tokens or max_call_cost_usd reached: the agent said goodbye
        "stream_lost",  # the stream ended without Twilio's stop: the call may go on elsewhere
        "handed_over",  # a draining replica moved the call to another one
        "shutdown",
        "error",
        OTHER,
    }
)
#: Why a Live connection was replaced (``agent_live_reconnects_total{reason}``): LiveLink's
#: reasons. ``closed_<code>`` for the close codes the Live API is known to send; other codes
#: count as closed_other.
RECONNECT_REASONS = frozenset(
    {
        "go_away",
        "closed",
        "closed_1000",
        "closed_1001",
        "closed_1006",
        "closed_1007",
        "closed_1008",
        "closed_1011",
        "closed_1013",
        "closed_other",
        "dropped",
        "stall",  # the model went silent when it owed an answer (the call's stall watchdog)
        "hand_off",  # another agent took the call over, on a model without contextUpdate
        "reload",  # the agent was reloaded into the call (on_reload: update), likewise
        OTHER,
    }
)
#: Why a Live connection attempt failed (``agent_live_connect_failures_total{reason}``): the
#: kinds of :mod:`agent.live.failures` (auth, model and permission are refusals, not retried).
CONNECT_FAILURE_REASONS = frozenset(
    {"auth", "model", "permission", "timeout", "refused", "protocol", OTHER}
)
#: How a tool call ended (``agent_tool_latency_seconds{outcome}``).
STORM_OUTCOMES = frozenset({"recovered", "gave_up", "call_ended", OTHER})

BREAKER_EVENTS = frozenset({"opened", "refused", OTHER})

STALL_CAUSES = frozenset({"caller", "prompt", "tool", "audio", "empty_turn", OTHER})

AGENT_CHANGE_REASONS = frozenset({"hand_off", "reload", OTHER})
AGENT_CHANGE_WAYS = frozenset({"context_update", "reconnect", OTHER})

STALL_ACTIONS = frozenset({"nudge", "reconnect", "fallback", OTHER})

TOOL_OUTCOMES = frozenset(
    {"ok", "error", "timeout", "cancelled", "completed_after_cancellation", OTHER}
)
#: ``agent_tokens_total{direction}``: the Live API's prompt and response token counts.
TOKEN_DIRECTIONS = frozenset({"prompt", "response", OTHER})
#: ``agent_tokens_total{modality}``: the Live API's ``MediaModality`` names.
TOKEN_MODALITIES = frozenset(
    {"AUDIO", "TEXT", "IMAGE", "VIDEO", "DOCUMENT", "MODALITY_UNSPECIFIED", "OTHER"}
)

#: Tool names come from agent configuration (and, on a bad day, from the model's imagination):
#: any well-formed name is a label, up to this many distinct ones per process; then ``other``.
MAX_TOOL_LABELS = 64
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
INVALID_TOOL = "invalid"

FRAME_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3)
CONNECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TOOL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def normalise_label(value: str, allowed: frozenset[str]) -> str:
    """``value`` as a label from ``allowed``: lower-cased, spaces and dashes as ``_``; else other.

    ``"Caller hung up"`` -> ``caller_hung_up``; ``"closed_4000"`` -> ``closed_other`` when
    ``closed_other`` is allowed; anything else unknown -> ``other``.
    """
    label = value.strip().lower().replace(" ", "_").replace("-", "_")
    if label in allowed:
        return label
    if label.startswith("closed_") and label[7:].isdigit() and "closed_other" in allowed:
        return "closed_other"
    return OTHER


class Metrics:
    """All the bridge's metrics in one registry (one per app, so tests build their own).

    With no ``registry`` it makes one that also carries the process, platform and GC collectors
    (memory, CPU, open files, Python version): what an on-call engineer checks first. A registry
    passed in is used as it is.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # prometheus_client chose its value store when it was imported, from the same variable.
        self.shared_dir = os.environ.get(MULTIPROCESS_DIR) or None
        if registry is None:
            registry = CollectorRegistry()
            if self.shared_dir is None:
                ProcessCollector(registry=registry)
                PlatformCollector(registry=registry)
                GCCollector(registry=registry)
                # Beside RSS, to tell a leak from the allocator keeping freed memory: Python's own
                # blocks rise with a leak and fall back when calls end; RSS need not.
                Gauge(
                    "agent_python_allocated_blocks",
                    "Memory blocks Python's allocator has handed out and not got back "
                    "(sys.getallocatedblocks()).",
                    registry=registry,
                ).set_function(sys.getallocatedblocks)
        self.registry = registry
        self.active_calls = Gauge(
            "agent_active_calls",
            "Calls in progress.",
            registry=registry,
            multiprocess_mode="livesum",  # the workers alive, summed (multiprocess mode only)
        )
        self.calls = Counter(
            "agent_calls",
            "Ended calls, by agent and ending reason.",
            ["agent", "reason"],
            registry=registry,
        )
        self.frames = Counter(
            "agent_frames",
            "20 ms audio frames: in = from the caller, out = to the caller.",
            ["direction"],
            registry=registry,
        )
        self.frame_processing_seconds = Histogram(
            "agent_frame_processing_seconds",
            "Synchronous processing time of one frame (sampled, 1 in FrameTimer.SAMPLE_EVERY).",
            ["direction"],
            buckets=FRAME_BUCKETS,
            registry=registry,
        )
        self.live_connect_seconds = Histogram(
            "agent_live_connect_seconds",
            "Time to open a Live API session and complete its setup.",
            buckets=CONNECT_BUCKETS,
            registry=registry,
        )
        self.live_reconnects = Counter(
            "agent_live_reconnects",
            "Live sessions replaced mid-call, by reason.",
            ["reason"],
            registry=registry,
        )
        self.live_storms = Counter(
            "agent_live_reconnect_storms",
            "Runs of failed Live reconnections (one live.reconnect_storm log line each), by how "
            "they ended: recovered, gave_up (the call played its fallback) or call_ended.",
            ["outcome"],
            registry=registry,
        )
        self.live_breaker = Counter(
            "agent_live_breaker",
            "The per-process Live circuit breaker: opened (too many calls gave up), refused "
            "(a connection attempt failed fast while it was open).",
            ["event"],
            registry=registry,
        )
        self.stalls = Counter(
            "agent_model_stalls",
            "Times the model owed an answer and sent nothing for stall_after_s, by cause "
            "(caller, prompt, tool, audio, empty_turn) and what the call did (nudge, "
            "reconnect, fallback).",
            ["cause", "action"],
            registry=registry,
        )
        self.agent_changes = Counter(
            "agent_call_agent_changes",
            "Calls in progress that changed agent, by reason (hand_off: the model handed the call "
            "over; reload: the agent file changed, with on_reload: update) and how "
            "(context_update: mid-session; reconnect: a new connection with the new setup).",
            ["reason", "how"],
            registry=registry,
        )
        self.live_connect_failures = Counter(
            "agent_live_connect_failures",
            "Live connection attempts that failed (calls' and the preflight's), by reason: auth, "
            "model, permission (refusals: not retried), timeout, refused, protocol, other.",
            ["reason"],
            registry=registry,
        )
        self.interruptions = Counter(
            "agent_interruptions", "Barge-ins: the caller spoke over the agent.", registry=registry
        )
        self.tool_latency_seconds = Histogram(
            "agent_tool_latency_seconds",
            "Tool call latency, by tool and outcome.",
            ["tool", "outcome"],
            buckets=TOOL_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "agent_tokens",
            "Live API tokens, by direction (prompt, response) and modality.",
            ["direction", "modality"],
            registry=registry,
        )
        self.calls_refused = Counter(
            "agent_calls_refused",
            "Voice webhooks answered 503 (Twilio uses the number's fallback URL), by reason: "
            "full (MAX_CALLS reached) or draining.",
            ["reason"],
            registry=registry,
        )
        self.connections_refused = Counter(
            "agent_connections_refused",
            "Connections answered 503 and closed at once: MAX_CONNECTIONS were open.",
            registry=registry,
        )
        self.records_dropped = Counter(
            "agent_call_records_dropped",
            "Call-record writes dropped because the writer queue was full or the write failed.",
            registry=registry,
        )
        self._tool_labels: set[str] = set()
        self._warned: set[tuple[str, str]] = set()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its Content-Type, for ``GET /metrics``: this process's
        metrics, or, in multiprocess mode, every worker's summed."""
        if self.shared_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=self.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(combined), CONTENT_TYPE

    def frame_timer(self) -> FrameTimer:
        """A new per-call :class:`FrameTimer` feeding these metrics."""
        return FrameTimer(self)

    def track_active_calls(self, count: Callable[[], int]) -> None:
        """Read ``agent_active_calls`` from ``count`` at each scrape (e.g. the app's ActiveCalls'
        size), so the gauge can never drift from the truth the way paired inc/dec can. In
        multiprocess mode a scrape cannot call into other workers: :meth:`set_active_calls`,
        called on every change, keeps this worker's share instead."""
        if self.shared_dir is None:
            self.active_calls.set_function(count)

    def set_active_calls(self, count: int) -> None:
        """This process's calls in progress changed (multiprocess mode; see above)."""
        if self.shared_dir is not None:
            self.active_calls.set(count)

    def count_call_ended(self, agent: str, reason: str) -> None:
        """One call ended; ``reason`` is normalised to :data:`CALL_END_REASONS`."""
        self.calls.labels(agent, self._label("reason", reason, CALL_END_REASONS)).inc()

    def count_call_refused(self, reason: str) -> None:
        """A new call was refused with 503: ``full`` or ``draining``."""
        self.calls_refused.labels(reason).inc()

    def observe_live_connect(self, seconds: float) -> None:
        """A Live session was opened (first connection or reconnection) in ``seconds``."""
        self.live_connect_seconds.observe(seconds)

    def count_live_reconnect(self, reason: str) -> None:
        """A Live session was replaced; ``reason`` is normalised to :data:`RECONNECT_REASONS`."""
        self.live_reconnects.labels(self._label("reason", reason, RECONNECT_REASONS)).inc()

    def count_live_storm(self, outcome: str) -> None:
        """A reconnect storm ended; ``outcome`` is normalised to :data:`STORM_OUTCOMES`."""
        self.live_storms.labels(self._label("outcome", outcome, STORM_OUTCOMES)).inc()

    def count_live_breaker(self, event: str) -> None:
        """The circuit breaker ``opened`` or ``refused`` an attempt (:data:`BREAKER_EVENTS`)."""
        self.live_breaker.labels(self._label("event", event, BREAKER_EVENTS)).inc()

    def count_stall(self, cause: str, action: str) -> None:
        """The model stalled (:data:`STALL_CAUSES`) and the call tried ``action``."""
        self.stalls.labels(
            self._label("cause", cause, STALL_CAUSES), self._label("action", action, STALL_ACTIONS)
        ).inc()

    def count_agent_change(self, reason: str, how: str) -> None:
        """A call in progress took another agent (:data:`AGENT_CHANGE_REASONS`, ``how`` one of
        :data:`AGENT_CHANGE_WAYS`)."""
        self.agent_changes.labels(
            self._label("reason", reason, AGENT_CHANGE_REASONS),
            self._label("how", how, AGENT_CHANGE_WAYS),
        ).inc()

    def count_live_connect_failure(self, reason: str) -> None:
        """A Live connection attempt failed; ``reason`` is normalised to
        :data:`CONNECT_FAILURE_REASONS`."""
        self.live_connect_failures.labels(
            self._label("reason", reason, CONNECT_FAILURE_REASONS)
        ).inc()

    def count_interruption(self) -> None:
        """The caller barged in."""
        self.interruptions.inc()

    def observe_tool(self, tool: str, outcome: str, seconds: float) -> None:
        """A tool call ended with ``outcome`` (ok, error, timeout, cancelled) after ``seconds``.

        Any well-formed tool name is a label until :data:`MAX_TOOL_LABELS` distinct names have
        been seen; later new names count as ``other``, malformed ones as ``invalid``.
        """
        self.tool_latency_seconds.labels(
            self._tool_label(tool), self._label("outcome", outcome, TOOL_OUTCOMES)
        ).observe(seconds)

    def count_tokens(
        self, prompt_by_modality: Mapping[str, int], response_by_modality: Mapping[str, int]
    ) -> None:
        """Add one usage report's token counts (the Live API's ``*TokensDetails`` by modality)."""
        for modality, count in prompt_by_modality.items():
            self.add_tokens("prompt", modality, count)
        for modality, count in response_by_modality.items():
            self.add_tokens("response", modality, count)

    def add_tokens(self, direction: str, modality: str, count: int) -> None:
        """Add ``count`` tokens; direction and modality are normalised to their fixed sets."""
        if count <= 0:
            return
        mod = modality.strip().upper()
        if mod not in TOKEN_MODALITIES:
            self._warn_once("modality", modality)
            mod = "OTHER"
        self.tokens.labels(self._label("direction", direction, TOKEN_DIRECTIONS), mod).inc(count)

    def _label(self, name: str, value: str, allowed: frozenset[str]) -> str:
        label = normalise_label(value, allowed)
        if label == OTHER and value.strip().lower() != OTHER:
            self._warn_once(name, value)
        return label

    def _tool_label(self, tool: str) -> str:
        if tool in self._tool_labels:
            return tool
        if not _TOOL_NAME.fullmatch(tool):
            self._warn_once("tool", tool[:80])
            return INVALID_TOOL
        if len(self._tool_labels) >= MAX_TOOL_LABELS:
            self._warn_once("tool", tool)
            return OTHER
        self._tool_labels.add(tool)
        return tool

    def _warn_once(self, label: str, value: str) -> None:
        # A warning per distinct value, so a bug shows up in the logs without flooding them;
        # bounded like the labels themselves.
        key = (label, value)
        if key in self._warned or len(self._warned) >= 256:
            return
        self._warned.add(key)
        log.warning("metrics.label_normalised", label=label, value=value)


class FrameTimer:
    """Per-call frame counters and sampled timing for the per-frame path.

    Why this shape: a Prometheus ``inc()`` takes a lock and a histogram ``observe()`` also searches
    its buckets; at 100 frames a second per call that is measurable overhead for no extra insight.
    Here a frame costs an integer decrement and compare (:meth:`start`) and an integer add
    (:meth:`inbound` / :meth:`outbound`). One frame in :attr:`SAMPLE_EVERY` reads
    ``time.perf_counter_ns`` twice and records its processing time. The only clock reads are those
    samples, and they double as the flush clock: frame counts reach Prometheus at most once per
    :attr:`FLUSH_INTERVAL_NS` (checked on sampled frames) and at :meth:`flush`, which the session
    calls when the call ends. A scrape may therefore lag a live call by about a second.

    Not thread-safe, by design: one call's pumps run on one event loop.
    """

    SAMPLE_EVERY = 50
    FLUSH_INTERVAL_NS = 1_000_000_000

    __slots__ = (
        "_clock_ns",
        "_countdown",
        "_flushed_at_ns",
        "_frames_in",
        "_frames_out",
        "_hist_in",
        "_hist_out",
        "_in_counter",
        "_out_counter",
        "_sample_every",
        "_samples_in",
        "_samples_out",
    )

    def __init__(
        self,
        metrics: Metrics,
        *,
        sample_every: int = SAMPLE_EVERY,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if sample_every < 1:
            raise ValueError("sample_every must be at least 1")
        self._sample_every = sample_every
        self._clock_ns = clock_ns
        # Resolve the labelled children once: ``labels()`` is a dict lookup under a lock.
        self._in_counter = metrics.frames.labels("in")
        self._out_counter = metrics.frames.labels("out")
        self._hist_in = metrics.frame_processing_seconds.labels("in")
        self._hist_out = metrics.frame_processing_seconds.labels("out")
        # The first frame of a call is sampled: a short call still gets one timing.
        self._countdown = 1
        self._frames_in = 0
        self._frames_out = 0
        self._samples_in: list[float] = []
        self._samples_out: list[float] = []
        self._flushed_at_ns = clock_ns()

    def start(self) -> int:
        """Call before a frame's work: a start time in ns for one frame in N, otherwise 0."""
        self._countdown -= 1
        if self._countdown:
            return 0
        self._countdown = self._sample_every
        return self._clock_ns()

    def inbound(self, started_ns: int = 0) -> None:
        """One caller frame processed; ``started_ns`` is what :meth:`start` returned."""
        self._frames_in += 1
        if started_ns:
            now = self._clock_ns()
            self._samples_in.append((now - started_ns) / 1e9)
            self._maybe_flush(now)

    def outbound(self, started_ns: int = 0, frames: int = 1) -> None:
        """The model's audio became ``frames`` frames for the caller; a sample is timed per
        frame (the chunk's time divided by its frames), so both directions share one unit."""
        self._frames_out += frames
        if started_ns and frames > 0:
            now = self._clock_ns()
            self._samples_out.append((now - started_ns) / 1e9 / frames)
            self._maybe_flush(now)

    @property
    def pending(self) -> tuple[int, int]:
        """Frames (in, out) counted but not yet pushed to Prometheus."""
        return self._frames_in, self._frames_out

    def flush(self) -> None:
        """Push the counts and samples gathered so far into Prometheus (call at the call's end)."""
        if self._frames_in:
            self._in_counter.inc(self._frames_in)
            self._frames_in = 0
        if self._frames_out:
            self._out_counter.inc(self._frames_out)
            self._frames_out = 0
        for seconds in self._samples_in:
            self._hist_in.observe(seconds)
        for seconds in self._samples_out:
            self._hist_out.observe(seconds)
        self._samples_in.clear()
        self._samples_out.clear()

    def _maybe_flush(self, now_ns: int) -> None:
        if now_ns - self._flushed_at_ns >= self.FLUSH_INTERVAL_NS:
            self._flushed_at_ns = now_ns
            self.flush()
