"""Placing a call: the voice webhook, its TwiML, and the asyncio adapter that drives a
:class:`~agent.sim.carrier.phone.Phone` over the media-stream WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import json
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp

from agent.audio.codec import (
    pcm16_to_ulaw,
    read_wav,
    resample_offline,
)
from agent.errors import TelephonyError
from agent.sim.carrier.phone import (
    _HTTP_TIMEOUT_S,
    _PARAMETER_LIMIT,
    _WS_CLOSE_TIMEOUT_S,
    BUNDLED_CALLER_CLIPS,
    FRAME_MS,
    SAMPLE_RATE,
    CallReport,
    CarrierOptions,
    Message,
    Phone,
    _short,
    new_sid,
)
from agent.sim.carrier.rest import (
    TwilioApiSimulator,
)
from agent.telephony.webhooks import compute_signature

# -- the voice webhook and its TwiML (pure) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamInstruction:
    """What ``<Connect><Stream>`` told Twilio to do."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    #: Things real Twilio would reject or warn about (the simulator goes ahead, and reports them).
    problems: tuple[str, ...] = ()
    #: ``<Connect action>``: where Twilio asks what to do when the stream ends while the call is
    #: up (None: the call hangs up when the stream ends).
    action: str | None = None


def voice_webhook_params(
    *,
    call_sid: str,
    account_sid: str,
    from_number: str,
    to_number: str,
    stir_verstat: str | None = None,
    call_status: str = "ringing",
) -> dict[str, str]:
    """The form fields Twilio POSTs to the voice webhook when an inbound call rings
    (``StirVerstat`` only when the caller ID carried a STIR/SHAKEN attestation, as on Twilio).

    A ``<Connect action>`` request carries the same standard parameters, with the call
    ``in-progress`` (https://www.twilio.com/docs/voice/twiml/connect#action: "Twilio's standard
    request parameters along with some parameters specific to the nested noun").
    """
    extra = {"StirVerstat": stir_verstat} if stir_verstat else {}
    return extra | {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": call_status,
        "Called": to_number,
        "Caller": from_number,
        "Direction": "inbound",
        "From": from_number,
        "To": to_number,
    }


def parse_stream_twiml(twiml: str, base_url: str = "") -> StreamInstruction:
    """The ``<Connect><Stream>`` in the voice webhook's TwiML (``TelephonyError`` if none);
    a relative ``<Connect action>`` is resolved against ``base_url``, the URL requested."""
    instruction = parse_next_twiml(twiml, base_url)
    if instruction is None:
        raise TelephonyError(
            f"the voice webhook's TwiML has no <Response><Connect><Stream>: {_short(twiml)}"
        )
    return instruction


def parse_next_twiml(twiml: str, base_url: str = "") -> StreamInstruction | None:
    """The ``<Connect><Stream>`` in TwiML, or None when it has none (``<Hangup/>``, an empty
    ``<Response/>``: the call ends). ``TelephonyError`` for XML that is not TwiML."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise TelephonyError(f"the webhook answered invalid XML ({exc}): {_short(twiml)}") from exc
    if root.tag != "Response":
        raise TelephonyError(f"the TwiML has no <Response> root: {_short(twiml)}")
    connect = root.find("./Connect")
    stream = connect.find("./Stream") if connect is not None else None
    if connect is None or stream is None:
        return None
    action = connect.get("action")
    url = stream.get("url")
    if not url:
        raise TelephonyError(f"<Stream> has no url attribute: {_short(twiml)}")
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise TelephonyError(f"<Stream url> must be a ws:// or wss:// URL, got {url!r}")
    # Twilio itself insists on wss://, but a bridge on a developer's machine serves ws://, so that
    # is not reported: the report should flag bridge bugs, not the local set-up.
    problems = []
    if "?" in url:
        problems.append(f"<Stream url> {url!r} has a query string, which Twilio does not allow")
    if len(root.findall("./Connect/Stream")) > 1:
        problems.append("more than one <Connect><Stream>: Twilio allows one per call")
    parameters: dict[str, str] = {}
    for param in stream.findall("Parameter"):
        name, value = param.get("name"), param.get("value", "")
        if not name:
            problems.append("a <Parameter> without a name")
            continue
        if len(name) + len(value) >= _PARAMETER_LIMIT:
            problems.append(f"<Parameter> {name!r} reaches Twilio's {_PARAMETER_LIMIT}-char limit")
        parameters[name] = value
    return StreamInstruction(
        url=url,
        parameters=parameters,
        problems=tuple(problems),
        action=urljoin(base_url, action) if action else None,
    )


# -- caller audio ----------------------------------------------------------------------------------


def load_caller_audio(name_or_path: str) -> bytes:
    """PCM16 8 kHz caller audio: a bundled clip by short name (see ``BUNDLED_CALLER_CLIPS``) or a
    mono 16-bit WAV file at any rate, resampled to 8 kHz.

    Raises ``FileNotFoundError`` (naming the bundled clips) when it is neither, and ``AudioError``
    when the file is not audio the simulator can send.
    """
    if name_or_path in BUNDLED_CALLER_CLIPS:
        clip = importlib.resources.files("agent") / "sim" / "assets" / f"caller-{name_or_path}.wav"
        with importlib.resources.as_file(clip) as path:
            pcm, rate = read_wav(path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"caller audio {name_or_path!r} is neither a WAV file nor a bundled clip "
                f"({', '.join(BUNDLED_CALLER_CLIPS)})"
            )
        pcm, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        pcm = resample_offline(pcm, rate, SAMPLE_RATE)
    return pcm


# -- the asyncio adapter ---------------------------------------------------------------------------


async def place_call(
    options: CarrierOptions,
    utterances: Sequence[bytes],
    *,
    rest: TwilioApiSimulator | None = None,
    observer: StreamObserver | None = None,
) -> CallReport:
    """Call the bridge at ``options.url`` and say ``utterances`` (PCM16 8 kHz), as Twilio would.

    ``observer`` watches every message of every stream of the call (the benchmarks time them).

    With ``rest``, the call is placed under that simulator's account and can be updated through
    its REST API while it lasts (hung up, transferred), as a real call can through Twilio's.

    Returns the report once the caller hangs up, the server closes the stream, the bridge ends
    or moves the call through the REST API, or the maximum duration passes. Raises
    ``TelephonyError`` when the call cannot be set up (webhook unreachable or answering non-2xx,
    TwiML without a stream, WebSocket refused) and ``AudioError`` for PCM that is not 16-bit.
    """
    if options.carrier != "twilio":
        from agent.sim.carrier.dialects import place_carrier_call  # it imports this module

        return await place_carrier_call(options, utterances, observer=observer)
    caller_audio = [pcm16_to_ulaw(pcm) for pcm in utterances]
    call_sid, stream_sid = new_sid("CA"), new_sid("MZ")
    account_sid = rest.account_sid if rest is not None else new_sid("AC")
    phone = Phone(
        options, caller_audio, call_sid=call_sid, account_sid=account_sid, stream_sid=stream_sid
    )
    if rest is not None:
        # Routable from the moment it rings: Twilio accepts updates for a ringing call too.
        rest.attach(phone)
    try:
        timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            webhook = options.url.rstrip("/") + "/twilio/voice"
            twiml = await ring(http, options, call_sid=call_sid, account_sid=account_sid)
            if phone.finished:  # ended over REST while the webhook was answering
                return phone.report()
            stream: StreamInstruction | None = parse_stream_twiml(twiml, webhook)
            opening: Callable[[Mapping[str, str]], list[Message]] = phone.connect
            # The call's one clock: ticks stay paced against it across streams and gaps.
            started = asyncio.get_running_loop().time()
            while stream is not None:
                for problem in stream.problems:
                    phone.note_problem(problem)
                ws = await open_stream(http, stream.url, options.auth_token)
                try:
                    await run_stream(
                        ws,
                        phone,
                        stream.parameters,
                        options.speed,
                        rest=rest,
                        observer=observer,
                        started=started,
                        open_messages=opening,
                        on_lost=phone.stream_lost if stream.action else phone.server_hung_up,
                    )
                finally:
                    await ws.close()
                if phone.finished or stream.action is None:
                    break
                # The stream ended with the call still up: Twilio asks the action URL what next,
                # while the caller, on the line, hears silence.
                stream = await _through_gap(
                    phone,
                    options.speed,
                    started,
                    _follow_action(http, options, phone, stream.action),
                )
                if stream is None:
                    phone.server_hung_up()
                opening = functools.partial(_second_stream, phone)
    finally:
        if rest is not None:
            rest.detach(call_sid)
    return phone.report()


def _second_stream(phone: Phone, parameters: Mapping[str, str]) -> list[Message]:
    return phone.new_stream(new_sid("MZ"), parameters)


async def _follow_action(
    http: aiohttp.ClientSession, options: CarrierOptions, phone: Phone, action: str
) -> StreamInstruction | None:
    """POST the ``<Connect action>`` URL as Twilio does; the next stream, or None to hang up."""
    params = voice_webhook_params(
        call_sid=phone.call_sid,
        account_sid=phone.account_sid,
        from_number=options.from_number,
        to_number=options.to_number,
        stir_verstat=options.stir_verstat,
        call_status="in-progress",
    )
    headers = {}
    if options.auth_token is not None:
        headers["X-Twilio-Signature"] = compute_signature(options.auth_token, action, params)
    try:
        async with http.post(action, data=params, headers=headers) as response:
            body, status = await response.text(), response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        phone.note_problem(f"the <Connect action> {action} could not be reached: {exc!r}")
        return None
    if not 200 <= status < 300:
        # Twilio plays its "application error" message and hangs up.
        phone.note_problem(f"the <Connect action> {action} answered {status}")
        return None
    return parse_next_twiml(body, action)


async def _through_gap(
    phone: Phone,
    speed: float,
    started: float,
    work: Awaitable[StreamInstruction | None],
) -> StreamInstruction | None:
    """Await ``work`` while the phone keeps ticking on the call's clock, streamless."""
    loop = asyncio.get_running_loop()
    period = FRAME_MS / 1000 / speed

    async def tick() -> None:
        while not phone.finished:
            await asyncio.sleep(max(0.0, started + phone.ticks * period - loop.time()))
            phone.tick()  # returns nothing while there is no stream (a stop has no socket)

    ticker = loop.create_task(tick())
    try:
        return await work
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


async def ring(
    http: aiohttp.ClientSession, options: CarrierOptions, *, call_sid: str, account_sid: str
) -> str:
    """POST the voice webhook; the TwiML it answers."""
    url = options.url.rstrip("/") + "/twilio/voice"
    params = voice_webhook_params(
        call_sid=call_sid,
        account_sid=account_sid,
        from_number=options.from_number,
        to_number=options.to_number,
        stir_verstat=options.stir_verstat,
    )
    headers = {}
    if options.auth_token is not None:
        # Signed over the exact URL we POST, as Twilio signs the URL it requests.
        headers["X-Twilio-Signature"] = compute_signature(options.auth_token, url, params)
    try:
        async with http.post(url, data=params, headers=headers) as response:
            body = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TelephonyError(
            f"could not reach the voice webhook {url}: {connection_failure(exc)} (is the bridge "
            "running there? `agent serve` listens on PORT, default 8080)"
        ) from exc
    if not 200 <= status < 300:
        raise TelephonyError(f"the voice webhook {url} answered {status}: {_short(body.strip())}")
    return body


def connection_failure(exc: BaseException) -> str:
    """Why a request failed, in a few words (``connection refused``), not aiohttp's repr."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return (exc.os_error.strerror or str(exc.os_error)).lower()
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"the server answered {exc.status} {exc.message}".rstrip()
    return str(exc) or type(exc).__name__


async def open_stream(
    http: aiohttp.ClientSession, url: str, auth_token: str | None
) -> aiohttp.ClientWebSocketResponse:
    """Open the media-stream WebSocket at ``url`` exactly as the TwiML gave it."""
    headers = {}
    if auth_token is not None:
        # Twilio signs the upgrade request too, over the stream URL as written, with no params.
        headers["X-Twilio-Signature"] = compute_signature(auth_token, url, {})
    try:
        return await http.ws_connect(
            url,
            headers=headers,
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_close=_WS_CLOSE_TIMEOUT_S),
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TelephonyError(
            f"could not open the media stream {url}: {connection_failure(exc)}"
        ) from exc


class StreamObserver(Protocol):
    """Watches a simulated call's messages as they cross the socket (the benchmarks time them)."""

    def sent(self, message: Message) -> None: ...

    def received(self, text: str) -> None: ...

    def hang_up_now(self) -> bool:
        """Checked every tick: True makes the caller hang up at once."""
        ...


async def run_stream(
    ws: aiohttp.ClientWebSocketResponse,
    phone: Phone,
    parameters: Mapping[str, str],
    speed: float,
    *,
    rest: TwilioApiSimulator | None = None,
    observer: StreamObserver | None = None,
    started: float | None = None,
    open_messages: Callable[[Mapping[str, str]], list[Message]] | None = None,
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Drive ``phone`` over ``ws`` until the call or this stream ends: paced ticks, a reader and
    a writer. ``started`` anchors the pacing (the call's start, for a second stream);
    ``open_messages`` opens the stream (default :meth:`Phone.connect`); ``on_lost`` is what the
    socket closing means (default: the server hung up)."""
    lost = on_lost if on_lost is not None else phone.server_hung_up
    # One writer sends everything in the order the phone produced it, so sequence numbers go out in
    # order even though both the tick loop and the reader produce messages.
    outbox: asyncio.Queue[Message | None] = asyncio.Queue()

    def post(messages: list[Message]) -> None:
        for message in messages:
            outbox.put_nowait(message)

    async def write() -> None:
        while (message := await outbox.get()) is not None:
            if ws.closed:
                phone.undelivered(message)
                continue
            try:
                await ws.send_str(json.dumps(message))
            except (aiohttp.ClientError, ConnectionError):
                lost()
                phone.undelivered(message)
                continue
            if observer is not None:
                observer.sent(message)

    async def read() -> None:
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.TEXT:
                if observer is not None:
                    observer.received(frame.data)
                post(phone.receive_text(frame.data))
            elif frame.type is aiohttp.WSMsgType.BINARY:
                phone.receive_binary(frame.data)
            else:  # ERROR: the connection is gone
                break
        # The iterator also ends when we close after our own stop; then the call is already over.
        lost()

    async def run_ticks() -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000 / speed
        anchor = loop.time() if started is None else started
        while phone.streaming:
            # Scheduled against the start, not the previous tick, so pacing never drifts; when
            # behind, ticks run back to back (still yielding so the reader keeps up).
            await asyncio.sleep(max(0.0, anchor + phone.ticks * period - loop.time()))
            if observer is not None and observer.hang_up_now():
                post(phone.hang_up())
                continue
            post(phone.tick())

    post((open_messages or phone.connect)(parameters))
    if rest is not None:
        # From now on a REST update's ``stop`` goes out through the same writer, in order.
        rest.attach(phone, post)
    # The task group ties the reader and writer to this call: if either fails, the call fails.
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(read())
        writer = tasks.create_task(write())
        await run_ticks()
        outbox.put_nowait(None)  # after the stop (or the server's hang-up), nothing more to send
        await writer
        await ws.close()  # ends the reader
