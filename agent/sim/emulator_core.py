"""The local Live API emulator's decisions, sans-I/O.

:class:`LiveEmulatorCore` is one emulated ``BidiGenerateContent`` session. The adapter
(:mod:`agent.sim.live_emulator`) feeds it every client frame with :meth:`~LiveEmulatorCore.receive`,
lets it act on its timers with :meth:`~LiveEmulatorCore.poll` and sends what
:meth:`~LiveEmulatorCore.data_to_send` returns, in that order. The core never touches a socket or
reads a clock: ``now_ms`` is *emulated* time that the adapter hands in (wall time multiplied by the
speed-up), and the voice activity detector runs on audio time (sample counts), so a session behaves
the same at any speed and in a unit test with no event loop at all.

What it emulates, following ``docs/live-api-protocol.md``: the ``setup`` handshake and its errors
(as close frames, never exceptions), camelCase and snake_case keys, both base64 alphabets, an energy
VAD honouring ``automaticActivityDetection``, manual activity signals, spoken answers streamed from
bundled clips with transcriptions, barge-in, and ``usageMetadata`` on the final frame of a turn.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

JsonObject = dict[str, Any]

# --------------------------------------------------------------------------------------------
# Options and records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    """How an emulator behaves; one set of options serves every session it accepts."""

    speed: float = 1.0
    """1.0 = real time; 10.0 answers ten times faster. Scales every wall-clock wait."""
    think_ms: int = 0
    """Model "thinking" time from the end of a caller turn to its first audio (audio-time ms)."""
    chunk_ms: int = 40
    """Duration of each streamed audio chunk of an answer."""
    api_key: str | None = None
    """When set, a client must present it (``x-goog-api-key`` header or ``?key=``)."""

    def __post_init__(self) -> None:
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"speed must be a positive number, not {self.speed!r}")
        if self.think_ms < 0:
            raise ValueError(f"think_ms must not be negative, not {self.think_ms!r}")
        # Above a few seconds one chunk's base64 would approach the SDK's 1 MiB frame limit.
        if not 1 <= self.chunk_ms <= 5000:
            raise ValueError(f"chunk_ms must be between 1 and 5000, not {self.chunk_ms!r}")


@dataclass(slots=True)
class EmulatedSessionRecord:
    """What happened in one emulated session, filled in as it runs (for tests and diagnostics)."""

    setup: JsonObject = field(default_factory=dict)
    """The received ``setup`` body, normalised to camelCase."""
    audio_bytes_received: int = 0
    """PCM16 bytes of realtime audio (``realtimeInput.audio`` and audio ``mediaChunks``)."""
    audio_chunks_received: int = 0
    caller_turns: int = 0
    """Caller turns detected: VAD or ``activityStart``/``activityEnd`` turns and
    ``realtimeInput.text``. A ``clientContent`` turn (such as a request for the greeting) is the
    bridge's, not the caller's, and is not counted."""
    answers_started: int = 0
    answers_completed: int = 0
    interruptions: int = 0
    client_messages: list[str] = field(default_factory=list, repr=False)
    """The kind of every client message in order: ``"setup"``, ``"realtimeInput.audio"``, ..."""
    closed_code: int | None = None


@dataclass(frozen=True, slots=True)
class Clip:
    """A bundled answer: mono PCM16 little-endian audio and what it says."""

    pcm: bytes
    rate: int
    transcript: str

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / 2 / self.rate * 1000


@dataclass(frozen=True, slots=True)
class AnswerClips:
    """The clips the emulated model speaks: a greeting for a ``clientContent`` turn, a reply for a
    caller's turn."""

    greeting: Clip
    reply: Clip


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send ``message`` as one JSON frame (binary, as Google's servers do)."""

    message: JsonObject

    def encode(self) -> bytes:
        return json.dumps(self.message, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the WebSocket with ``code`` and ``reason``; nothing is sent after it."""

    code: int
    reason: str


Outgoing = SendMessage | CloseConnection

# --------------------------------------------------------------------------------------------
# Wire details
# --------------------------------------------------------------------------------------------

INVALID_ARGUMENT: Final = "Request contains an invalid argument."
INVALID_API_KEY: Final = "API key not valid. Please pass a valid API key."
EXPLICIT_ACTIVITY_WITH_VAD: Final = (
    "Explicit activity control is not supported when automatic activity detection is enabled."
)
CLOSE_INVALID: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_GOING_AWAY: Final = 1001
# A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5).
_MAX_REASON_BYTES: Final = 123

SETUP_FIELDS: Final = frozenset(
    {
        "model",
        "generationConfig",
        "systemInstruction",
        "tools",
        "realtimeInputConfig",
        "inputAudioTranscription",
        "outputAudioTranscription",
        "contextWindowCompression",
        "sessionResumption",
        "proactivity",
        "historyConfig",
    }
)
# contextUpdate is sent by recent SDKs; it is accepted and ignored here.
CLIENT_MESSAGE_FIELDS: Final = frozenset(
    {"setup", "clientContent", "realtimeInput", "toolResponse", "contextUpdate"}
)
# Models Google has shut down: they fail like any unknown model.
RETIRED_MODELS: Final = frozenset(
    {"models/gemini-2.0-flash-live-001", "models/gemini-2.0-flash-exp", "models/gemini-pro"}
)

# Values that are protobuf Struct/Value (function args and responses, JSON schemas): their keys are
# the user's data, not field names, so they pass through untouched.
_VERBATIM_KEYS: Final = frozenset(
    {"args", "response", "parametersJsonSchema", "responseJsonSchema", "default", "example"}
)
# Maps from user-chosen names to messages: keep the names, normalise the messages.
_NAME_MAP_KEYS: Final = frozenset({"properties"})

_RATE_RE: Final = re.compile(r"rate\s*=\s*(\d+)")
_URLSAFE_TO_STD: Final = str.maketrans("-_", "+/")
DEFAULT_INPUT_RATE: Final = 16000
OUTPUT_MIME_TYPE: Final = "audio/pcm;rate=24000"
# Gemini counts audio at about 25 tokens per second, in and out; text at about 4 characters a token.
AUDIO_TOKENS_PER_SECOND: Final = 25
CHARS_PER_TEXT_TOKEN: Final = 4


def camel_case(name: str) -> str:
    """``automatic_activity_detection`` -> ``automaticActivityDetection``; camelCase stays."""
    if "_" not in name.strip("_"):
        return name
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def normalise_keys(value: Any) -> Any:
    """A copy of a JSON value with every field name in camelCase, as the proto JSON parser reads it.

    Google's parser accepts both spellings at every level; normalising once on receipt lets the rest
    of the core look fields up by one name. User data (function arguments and responses, JSON
    schemas, the names in a schema's ``properties``) is left as sent.
    """
    if isinstance(value, list):
        return [normalise_keys(item) for item in value]
    if not isinstance(value, dict):
        return value
    result: JsonObject = {}
    for key, item in value.items():
        name = camel_case(key)
        if name in _VERBATIM_KEYS:
            result[name] = item
        elif name in _NAME_MAP_KEYS and isinstance(item, dict):
            result[name] = {prop: normalise_keys(schema) for prop, schema in item.items()}
        else:
            result[name] = normalise_keys(item)
    return result


def decode_base64(data: str) -> bytes:
    """Bytes from base64 in the standard or URL-safe alphabet, padded or not.

    Raises ``ValueError`` on anything else (the caller turns it into a 1007 close).
    """
    text = data.strip().translate(_URLSAFE_TO_STD)
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from exc


def pcm_rate(mime_type: object) -> int:
    """The sample rate named by ``audio/pcm;rate=N`` (16 kHz when absent, as the service does)."""
    if isinstance(mime_type, str):
        match = _RATE_RE.search(mime_type)
        if match and int(match.group(1)) > 0:
            return int(match.group(1))
    return DEFAULT_INPUT_RATE


def truncate_reason(reason: str) -> str:
    """``reason`` cut to the 123 UTF-8 bytes a close frame can carry (never mid-character)."""
    encoded = reason.encode()
    if len(encoded) <= _MAX_REASON_BYTES:
        return reason
    return encoded[:_MAX_REASON_BYTES].decode(errors="ignore")


def text_tokens(text: str) -> int:
    """A rough Gemini token count for ``text``."""
    return math.ceil(len(text) / CHARS_PER_TEXT_TOKEN) if text else 0


def audio_tokens(duration_ms: float) -> int:
    """A rough Gemini token count for ``duration_ms`` of audio."""
    return math.ceil(duration_ms / 1000 * AUDIO_TOKENS_PER_SECOND) if duration_ms > 0 else 0


# --------------------------------------------------------------------------------------------
# Voice activity detection (energy, on audio time)
# --------------------------------------------------------------------------------------------

FRAME_MS: Final = 10
# Energy thresholds in dBFS (RMS of a 10 ms frame relative to full scale). Telephone speech, even
# after a mu-law round trip and upsampling, peaks at -10..-25 dBFS with syllables above -35; line
# and room noise in the fixtures sits at -45..-60 dBFS and mu-law silence at -78 dBFS.
START_THRESHOLD_DBFS: Final = {"HIGH": -40.0, "LOW": -32.0}
# A start also needs this much above the tracked noise floor, so a noisy line does not talk forever.
START_MARGIN_DB: Final = {"HIGH": 9.0, "LOW": 14.0}
# Once speaking, frames count as speech down to (start threshold - hysteresis). END_SENSITIVITY_HIGH
# "ends speech more often": little hysteresis, so trailing murmurs read as silence; LOW keeps quiet
# word endings and breaths inside the turn.
END_HYSTERESIS_DB: Final = {"HIGH": 4.0, "LOW": 10.0}
# Speech must stay this far above the noise floor to keep a turn open.
END_MARGIN_DB: Final = 4.0
# The noise floor follows the quietest frames down at once and creeps up this fast, so it adapts to
# a steady noisy line within seconds but not to a caller who keeps talking.
NOISE_FLOOR_RISE_DB_PER_S: Final = 3.0
SILENCE_DBFS: Final = -120.0

DEFAULT_SILENCE_DURATION_MS: Final = 500
DEFAULT_PREFIX_PADDING_MS: Final = 20


@dataclass(frozen=True, slots=True)
class VadSettings:
    """``realtimeInputConfig.automaticActivityDetection`` with the Developer API's defaults."""

    disabled: bool = False
    start_sensitivity: Literal["HIGH", "LOW"] = "HIGH"
    end_sensitivity: Literal["HIGH", "LOW"] = "HIGH"
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking ``at_ms`` into the audio stream."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller stopped speaking; ``at_ms`` is the end of the last speech frame."""

    at_ms: float
    duration_ms: float


VadEvent = SpeechStarted | SpeechEnded


class EnergyVad:
    """An energy voice activity detector clocked by the audio itself.

    Audio is cut into 10 ms frames at whatever rate it arrives. A start needs ``prefix_padding_ms``
    of consecutive frames above the start threshold; an end needs ``silence_duration_ms`` of frames
    below the (lower) end threshold. Both thresholds are absolute dBFS levels raised, on a noisy
    line, to a margin above a tracked noise floor.
    """

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self._start_abs = START_THRESHOLD_DBFS[settings.start_sensitivity]
        self._start_margin = START_MARGIN_DB[settings.start_sensitivity]
        self._hysteresis = END_HYSTERESIS_DB[settings.end_sensitivity]
        # Frames needed: at least one, however small the configured durations.
        self._start_frames = max(1, math.ceil(settings.prefix_padding_ms / FRAME_MS))
        self._end_frames = max(1, math.ceil(settings.silence_duration_ms / FRAME_MS))
        self._rise_per_frame = NOISE_FLOOR_RISE_DB_PER_S * FRAME_MS / 1000
        # Start neutral: the floor only matters once it is known to be high.
        self.noise_floor_db = self._start_abs - self._start_margin
        self.position_ms = 0.0
        self.speaking = False
        self._pending = np.zeros(0, dtype=np.float64)
        self._pending_rate = 0
        self._run = 0
        self._run_start_ms = 0.0
        self._speech_start_ms = 0.0
        self._silent = 0
        self._last_speech_end_ms = 0.0

    def feed(self, samples: npt.NDArray[np.int16], rate: int) -> list[VadEvent]:
        """Run the detector over ``samples`` (mono, ``rate`` Hz); return what changed."""
        if rate != self._pending_rate:
            # A partial frame at another rate cannot be joined to this audio; skip its few ms.
            if self._pending_rate:
                self.position_ms += len(self._pending) / self._pending_rate * 1000
            self._pending = np.zeros(0, dtype=np.float64)
            self._pending_rate = rate
        data = np.concatenate([self._pending, samples.astype(np.float64)])
        frame_len = max(1, rate * FRAME_MS // 1000)
        whole = len(data) // frame_len * frame_len
        self._pending = data[whole:]
        if whole == 0:
            return []
        frames = data[:whole].reshape(-1, frame_len)
        power = np.mean(frames * frames, axis=1) / (32768.0 * 32768.0)
        levels = 10 * np.log10(np.maximum(power, 10 ** (SILENCE_DBFS / 10)))
        frame_ms = frame_len / rate * 1000
        events: list[VadEvent] = []
        for level in levels.tolist():
            event = self._frame(level, frame_ms)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, level: float, frame_ms: float) -> VadEvent | None:
        at = self.position_ms
        self.position_ms += frame_ms
        self.noise_floor_db = min(level, self.noise_floor_db + self._rise_per_frame)
        start_threshold = max(self._start_abs, self.noise_floor_db + self._start_margin)
        if not self.speaking:
            if level < start_threshold:
                self._run = 0
                return None
            if self._run == 0:
                self._run_start_ms = at
            self._run += 1
            if self._run < self._start_frames:
                return None
            self.speaking = True
            self._speech_start_ms = self._run_start_ms
            self._last_speech_end_ms = self.position_ms
            self._silent = 0
            self._run = 0
            return SpeechStarted(self._speech_start_ms)
        end_threshold = max(start_threshold - self._hysteresis, self.noise_floor_db + END_MARGIN_DB)
        if level >= end_threshold:
            self._silent = 0
            self._last_speech_end_ms = self.position_ms
            return None
        self._silent += 1
        if self._silent < self._end_frames:
            return None
        return self.end_speech()

    def end_speech(self) -> SpeechEnded | None:
        """End a turn in progress now (``audioStreamEnd``); ``None`` when nobody is speaking."""
        self._run = 0
        if not self.speaking:
            return None
        self.speaking = False
        self._silent = 0
        return SpeechEnded(
            self._last_speech_end_ms, self._last_speech_end_ms - self._speech_start_ms
        )


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------


class _RequestRejectedError(Exception):
    """A client message the real service would close the connection for."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class _Scheduled:
    """One frame of an answer, due at ``at_ms``; ``last`` is the frame that completes the turn."""

    at_ms: float
    message: JsonObject
    audio_ms: float = 0.0
    last: bool = False


@dataclass(slots=True)
class _Answer:
    """The answer being spoken: its frames still to send and how much audio has gone out."""

    messages: deque[_Scheduled]
    audio_sent_ms: float = 0.0


class LiveEmulatorCore:
    """One emulated Live API session: parsed client frames in, server frames and a close out.

    Feed it with :meth:`receive` (each client frame) and :meth:`poll` (when :meth:`next_deadline`
    comes due); send :meth:`data_to_send` after each call. Every ``now_ms`` is emulated time in
    milliseconds on one monotonic clock of the adapter's choosing.
    """

    def __init__(
        self,
        options: EmulatorOptions,
        clips: AnswerClips,
        *,
        api_version: str = "v1beta",
        record: EmulatedSessionRecord | None = None,
    ) -> None:
        self.options = options
        self.clips = clips
        self.api_version = api_version
        self.record = record if record is not None else EmulatedSessionRecord()
        self.closed = False
        self._outbox: list[Outgoing] = []
        self._setup_done = False
        self._vad: EnergyVad | None = None
        self._interrupts = True
        self._input_transcription = False
        self._output_transcription = False
        self._remainder = b""  # half a sample left over from an odd-length chunk
        # Manual activity (automatic VAD disabled): open between activityStart and activityEnd.
        self._activity_open = False
        self._activity_ms = 0.0
        self._answer: _Answer | None = None
        self._queued: deque[Clip] = deque()  # turns waiting for the current answer to end
        # Context the next answer is prompted with, by modality, for usageMetadata.
        self._context_text_tokens = 0
        self._context_audio_tokens = 0

    # -- the adapter's side --------------------------------------------------------------------

    def receive(self, data: str | bytes, now_ms: float) -> None:
        """Act on one client frame (a TEXT or BINARY WebSocket message) received at ``now_ms``."""
        if self.closed:
            return
        try:
            self._receive(data, now_ms)
        except _RequestRejectedError as rejected:
            self.close(rejected.code, rejected.reason)

    def poll(self, now_ms: float) -> None:
        """Emit every scheduled answer frame due by ``now_ms``."""
        while self._answer is not None and not self.closed:
            answer = self._answer
            if not answer.messages or answer.messages[0].at_ms > now_ms:
                return
            item = answer.messages.popleft()
            answer.audio_sent_ms += item.audio_ms
            self._send(item.message)
            if item.last:
                self._finish_answer(item.at_ms)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to send (emulated ms), or ``None``."""
        if self.closed or self._answer is None or not self._answer.messages:
            return None
        return self._answer.messages[0].at_ms

    def data_to_send(self) -> list[Outgoing]:
        """The frames (and perhaps a final close) to send now, in order; empties the outbox."""
        outgoing, self._outbox = self._outbox, []
        return outgoing

    def close(self, code: int, reason: str) -> None:
        """Close the session: stop answering and queue the close frame."""
        if self.closed:
            return
        self.closed = True
        self._answer = None
        self._queued.clear()
        self._outbox.append(CloseConnection(code, truncate_reason(reason)))

    def connection_lost(self) -> None:
        """The socket is gone (the client closed it): forget everything pending."""
        self.closed = True
        self._answer = None
        self._queued.clear()
        self._outbox.clear()

    # -- client messages -------------------------------------------------------------------------

    def _receive(self, data: str | bytes, now_ms: float) -> None:
        try:
            message = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.record.client_messages.append("<invalid>")
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT) from None
        if not isinstance(message, dict) or len(message) != 1:
            self.record.client_messages.append("<invalid>")
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        ((raw_kind, raw_body),) = message.items()
        kind = camel_case(raw_kind)
        if kind not in CLIENT_MESSAGE_FIELDS:
            self.record.client_messages.append(raw_kind)
            raise _RequestRejectedError(
                CLOSE_INVALID,
                f'Invalid JSON payload received. Unknown name "{raw_kind}": Cannot find field.',
            )
        if kind == "setup":
            self.record.client_messages.append("setup")
            self._on_setup(raw_body)
            return
        body = normalise_keys(raw_body)
        if not isinstance(body, dict):
            self.record.client_messages.append(kind)
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        if kind == "realtimeInput":
            self.record.client_messages.append(".".join([kind, "+".join(body)]) if body else kind)
        else:
            self.record.client_messages.append(kind)
        if not self._setup_done:
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        if kind == "realtimeInput":
            self._on_realtime_input(body, now_ms)
        elif kind == "clientContent":
            self._on_client_content(body, now_ms)
        # toolResponse and contextUpdate: this emulator declares no tools and keeps no context.

    def _on_setup(self, raw: Any) -> None:
        if self._setup_done or not isinstance(raw, dict):
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        for name in raw:
            if camel_case(name) not in SETUP_FIELDS:
                raise _RequestRejectedError(
                    CLOSE_INVALID,
                    f"Invalid JSON payload received. Unknown name \"{name}\" at 'setup': "
                    "Cannot find field.",
                )
        setup: JsonObject = normalise_keys(raw)
        self.record.setup = setup
        model = setup.get("model")
        if not isinstance(model, str) or not model:
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        if not model.startswith("models/") or model in RETIRED_MODELS:
            name = model if model.startswith("models/") else f"models/{model}"
            raise _RequestRejectedError(
                CLOSE_POLICY,
                f"{name} is not found for API version {self.api_version}, "
                "or is not supported for bidiGenerateContent.",
            )
        realtime = _object(setup.get("realtimeInputConfig"))
        vad_settings = _vad_settings(_object(realtime.get("automaticActivityDetection")))
        handling = realtime.get("activityHandling", "START_OF_ACTIVITY_INTERRUPTS")
        if handling not in (
            "START_OF_ACTIVITY_INTERRUPTS",
            "NO_INTERRUPTION",
            "ACTIVITY_HANDLING_UNSPECIFIED",
        ):
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        self._interrupts = handling != "NO_INTERRUPTION"
        self._vad = None if vad_settings.disabled else EnergyVad(vad_settings)
        self._input_transcription = "inputAudioTranscription" in setup
        self._output_transcription = "outputAudioTranscription" in setup
        self._context_text_tokens = _setup_tokens(setup)
        self._setup_done = True
        self._send({"setupComplete": {}})

    def _on_realtime_input(self, body: JsonObject, now_ms: float) -> None:
        # The SDK sends one field per message; the proto allows several, so take them in the order
        # that makes sense on a timeline.
        if "activityStart" in body:
            self._on_activity_start()
        if "audio" in body:
            self._on_audio(_object(body["audio"]), now_ms)
        for chunk in _list(body.get("mediaChunks")):
            blob = _object(chunk)
            if str(blob.get("mimeType", "audio/pcm")).startswith("audio/"):
                self._on_audio(blob, now_ms)
        if "text" in body:
            text = body["text"]
            if not isinstance(text, str):
                raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
            self.record.caller_turns += 1
            self._context_text_tokens += text_tokens(text)
            self._turn_ended(self.clips.reply, now_ms)
        if body.get("audioStreamEnd") is True and self._vad is not None:
            ended = self._vad.end_speech()
            if ended is not None:
                self._caller_audio_turn(ended.duration_ms, now_ms)
        if "activityEnd" in body:
            self._on_activity_end(now_ms)

    def _on_audio(self, blob: JsonObject, now_ms: float) -> None:
        data = blob.get("data", "")
        if not isinstance(data, str):
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        try:
            pcm = decode_base64(data)
        except ValueError:
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT) from None
        rate = pcm_rate(blob.get("mimeType"))
        self.record.audio_bytes_received += len(pcm)
        self.record.audio_chunks_received += 1
        pcm = self._remainder + pcm
        usable = len(pcm) - len(pcm) % 2
        self._remainder = pcm[usable:]
        samples = np.frombuffer(pcm[:usable], dtype="<i2").astype(np.int16)
        if self._vad is None:
            if self._activity_open:
                self._activity_ms += len(samples) / rate * 1000
            return
        for event in self._vad.feed(samples, rate):
            if isinstance(event, SpeechStarted):
                self._caller_started()
            else:
                self._caller_audio_turn(event.duration_ms, now_ms)

    def _on_activity_start(self) -> None:
        if self._vad is not None:
            raise _RequestRejectedError(CLOSE_INVALID, EXPLICIT_ACTIVITY_WITH_VAD)
        self._activity_open = True
        self._activity_ms = 0.0
        self._caller_started()

    def _on_activity_end(self, now_ms: float) -> None:
        if self._vad is not None:
            raise _RequestRejectedError(CLOSE_INVALID, EXPLICIT_ACTIVITY_WITH_VAD)
        if not self._activity_open:
            return
        self._activity_open = False
        self._caller_audio_turn(self._activity_ms, now_ms)

    def _on_client_content(self, body: JsonObject, now_ms: float) -> None:
        turns = body.get("turns", [])
        if isinstance(turns, dict):  # a single Content is accepted too
            turns = [turns]
        if not isinstance(turns, list):
            raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        for turn in turns:
            for part in _list(_object(turn).get("parts")):
                text = _object(part).get("text")
                if isinstance(text, str):
                    self._context_text_tokens += text_tokens(text)
        if body.get("turnComplete") is True:
            self._turn_ended(self.clips.greeting, now_ms)

    # -- turns and answers -----------------------------------------------------------------------

    def _caller_started(self) -> None:
        """The caller began speaking: barge in on an answer in progress, unless told not to."""
        if self._answer is None or not self._interrupts:
            return
        self._context_audio_tokens += audio_tokens(self._answer.audio_sent_ms)
        self._answer = None
        self.record.interruptions += 1
        self._send({"serverContent": {"interrupted": True}})
        self._send({"serverContent": {"turnComplete": True}})

    def _caller_audio_turn(self, duration_ms: float, now_ms: float) -> None:
        self.record.caller_turns += 1
        self._context_audio_tokens += audio_tokens(duration_ms)
        if self._input_transcription:
            # No speech recognition here: say honestly what was heard.
            placeholder = f"[caller speech {duration_ms / 1000:.1f} s]"
            self._send({"serverContent": {"inputTranscription": {"text": placeholder}}})
        self._turn_ended(self.clips.reply, now_ms)

    def _turn_ended(self, clip: Clip, now_ms: float) -> None:
        """Answer a finished client turn with ``clip``, after any answer still being spoken."""
        if self._answer is None:
            self._start_answer(clip, now_ms)
        else:
            self._queued.append(clip)

    def _start_answer(self, clip: Clip, now_ms: float) -> None:
        """Schedule the whole answer: audio chunks, transcription words, the closing frames."""
        self.record.answers_started += 1
        start = now_ms + self.options.think_ms
        chunk_ms = self.options.chunk_ms
        chunk_bytes = max(2, clip.rate * chunk_ms // 1000 * 2)
        chunks = [clip.pcm[i : i + chunk_bytes] for i in range(0, len(clip.pcm), chunk_bytes)]
        words = clip.transcript.split() if self._output_transcription else []
        # Every word but the last rides along the audio; the last closes the turn, as Gemini's does.
        words_at: dict[int, list[str]] = {}
        for index, word in enumerate(words[:-1]):
            position = index * len(chunks) // max(1, len(words) - 1)
            words_at.setdefault(position, []).append(word if index == 0 else " " + word)
        messages: deque[_Scheduled] = deque()
        for index, chunk in enumerate(chunks):
            at = start + index * chunk_ms
            part = {"inlineData": {"mimeType": OUTPUT_MIME_TYPE, "data": _b64(chunk)}}
            messages.append(
                _Scheduled(
                    at,
                    {"serverContent": {"modelTurn": {"role": "model", "parts": [part]}}},
                    audio_ms=len(chunk) / 2 / clip.rate * 1000,
                )
            )
            for text in words_at.get(index, []):
                messages.append(_Scheduled(at, _output_transcription(text)))
        end = start + max(0, len(chunks) - 1) * chunk_ms
        if words:
            last = words[-1] if len(words) == 1 else " " + words[-1]
            messages.append(_Scheduled(end, _output_transcription(last)))
        messages.append(_Scheduled(end, {"serverContent": {"generationComplete": True}}))
        response = audio_tokens(clip.duration_ms)
        messages.append(
            _Scheduled(
                end,
                {"serverContent": {"turnComplete": True}, "usageMetadata": self._usage(response)},
                last=True,
            )
        )
        self._answer = _Answer(messages)

    def _finish_answer(self, at_ms: float) -> None:
        assert self._answer is not None
        self._context_audio_tokens += audio_tokens(self._answer.audio_sent_ms)
        self._answer = None
        self.record.answers_completed += 1
        if self._queued:
            # Scheduled from the end of the previous answer, not from whenever poll ran: no drift.
            self._start_answer(self._queued.popleft(), at_ms)

    def _usage(self, response_tokens: int) -> JsonObject:
        prompt_details = [
            {"modality": modality, "tokenCount": count}
            for modality, count in (
                ("TEXT", self._context_text_tokens),
                ("AUDIO", self._context_audio_tokens),
            )
            if count
        ]
        prompt = self._context_text_tokens + self._context_audio_tokens
        return {
            "promptTokenCount": prompt,
            "responseTokenCount": response_tokens,
            "totalTokenCount": prompt + response_tokens,
            "promptTokensDetails": prompt_details,
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": response_tokens}],
        }

    def _send(self, message: JsonObject) -> None:
        self._outbox.append(SendMessage(message))


def _b64(data: bytes) -> str:
    # Google's servers send the standard alphabet, padded.
    return base64.b64encode(data).decode("ascii")


def _output_transcription(text: str) -> JsonObject:
    return {"serverContent": {"outputTranscription": {"text": text}}}


def _object(value: Any) -> JsonObject:
    """``value`` if it is a JSON object; a wrong type is a request the service would reject."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    return value


def _sensitivity(value: Any, prefix: str) -> Literal["HIGH", "LOW"]:
    if value is None or value == f"{prefix}_UNSPECIFIED":
        return "HIGH"  # the Developer API's default (Vertex defaults to LOW)
    if value == f"{prefix}_HIGH":
        return "HIGH"
    if value == f"{prefix}_LOW":
        return "LOW"
    raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)


def _milliseconds(value: Any, default: int) -> int:
    """An int32 field, which proto JSON also accepts as a decimal string."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT) from None
    if number < 0 or (isinstance(value, float) and value != number):
        raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    return number


def _vad_settings(config: Mapping[str, Any]) -> VadSettings:
    disabled = config.get("disabled", False)
    if not isinstance(disabled, bool):
        raise _RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    return VadSettings(
        disabled=disabled,
        start_sensitivity=_sensitivity(config.get("startOfSpeechSensitivity"), "START_SENSITIVITY"),
        end_sensitivity=_sensitivity(config.get("endOfSpeechSensitivity"), "END_SENSITIVITY"),
        prefix_padding_ms=_milliseconds(config.get("prefixPaddingMs"), DEFAULT_PREFIX_PADDING_MS),
        silence_duration_ms=_milliseconds(
            config.get("silenceDurationMs"), DEFAULT_SILENCE_DURATION_MS
        ),
    )


def _setup_tokens(setup: JsonObject) -> int:
    """Tokens the setup puts in every prompt: the system instruction and the tool declarations."""
    tokens = 0
    instruction = setup.get("systemInstruction")
    if isinstance(instruction, str):
        tokens += text_tokens(instruction)
    elif isinstance(instruction, dict):
        for part in instruction.get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                tokens += text_tokens(part["text"])
    if setup.get("tools"):
        tokens += text_tokens(json.dumps(setup["tools"], separators=(",", ":")))
    return tokens
