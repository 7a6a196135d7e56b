"""Per-frame work in a loop, for counting instructions: how each per-frame lever was decided.

CPU time on a shared machine moves with the neighbours' load; the number of instructions a piece
of work executes does not. Each workload here repeats one per-frame step ``count`` times; run it
under callgrind twice, with ``count`` and with 0, and the difference over ``count`` is that
step's instructions::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m agent.bench.perframe inbound-8k 5000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m agent.bench.perframe inbound-8k 0

(callgrind prints ``I refs``; user-space instructions only, so a system call counts as the few
instructions that enter it.) Workloads:

``inbound-8k``   a Twilio frame decoded and made a ``realtimeInput`` message at 8 kHz
``inbound-16k``  the same through the 16 kHz upsampler
``outbound``     a 40 ms model chunk (24 kHz) to mu-law frames and one Twilio ``media`` message
``parse-twilio`` a Twilio ``media`` message (20 ms) parsed into a ``MediaReceived``
``parse-live``   a Live API message carrying a 40 ms model chunk parsed into a ``ModelAudio``
``send-websockets`` / ``send-now``  an audio message written to a Live API WebSocket through
                 websockets' ``send``, or through :meth:`LiveConnection.send_now`; the server is a
                 sink in a child process, so only the sending side is counted
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Sequence

__all__ = ["WORKLOADS", "main"]

_SINK = """
import asyncio, sys
from websockets.asyncio.server import serve
async def main():
    async def handler(ws):
        async for _ in ws:
            pass
    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


def _inbound(rate: int) -> Callable[[int], None]:
    def run(count: int) -> None:
        from agent.audio.codec import ulaw_to_pcm16
        from agent.audio.transcoder import InboundTranscoder
        from agent.live import protocol

        frame = bytes(range(160))
        inbound = InboundTranscoder()
        for _ in range(count):
            pcm8k = ulaw_to_pcm16(frame)
            pcm = pcm8k if rate == 8000 else inbound.process_pcm16(pcm8k)
            protocol.audio_message(pcm, rate)

    return run


def _outbound(count: int) -> None:
    from agent.audio.transcoder import OutboundTranscoder
    from agent.telephony.twilio import TwilioMediaStream

    stream = TwilioMediaStream()
    stream.stream_sid = "MZ" + "0" * 32
    chunk = bytes(1920)  # 40 ms at 24 kHz, as the emulator sends
    outbound = OutboundTranscoder()
    for _ in range(count):
        frames = outbound.process(chunk)
        stream.media(b"".join(frames))


def _parse_twilio(count: int) -> None:
    from agent.telephony.twilio import TwilioMediaStream

    stream = TwilioMediaStream()
    stream.stream_sid = "MZ" + "0" * 32
    payload = "/" * 212 + "/w=="  # 160 bytes of mu-law (0xff, silence)
    message = (
        '{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"3",'
        f'"timestamp":"60","payload":"{payload}"}},"streamSid":"{stream.stream_sid}"}}'
    )
    for _ in range(count):
        stream.receive_text(message)


def _parse_live(count: int) -> None:
    import binascii

    from agent.live import protocol

    data = binascii.b2a_base64(bytes(range(256)) * 7 + bytes(128), newline=False).decode()
    message = (
        '{"serverContent":{"modelTurn":{"parts":[{"inlineData":'
        f'{{"mimeType":"audio/pcm;rate=24000","data":"{data}"}}}}]}}}}}}'
    )
    for _ in range(count):
        protocol.parse_server_message(message)


def _send(fast: bool) -> Callable[[int], None]:
    def run(count: int) -> None:
        sink = subprocess.Popen(
            [sys.executable, "-c", _SINK], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        try:
            assert sink.stdout is not None
            asyncio.run(_send_loop(int(sink.stdout.readline()), count, fast))
        finally:
            sink.terminate()
            sink.wait()

    return run


async def _send_loop(port: int, count: int, fast: bool) -> None:
    from websockets.asyncio.client import connect

    from agent.live import protocol
    from agent.live.connection import LiveConnection
    from agent.live.protocol import SetupComplete

    async with connect(f"ws://127.0.0.1:{port}", compression=None) as socket:
        conn = LiveConnection(socket, SetupComplete())
        pcm = bytes(320)
        for index in range(count):
            message = protocol.audio_message(pcm, 8000)
            if fast:
                if not conn.send_now(message):
                    await conn.send(message)
            else:
                await socket.send(message)
            if index % 50 == 49:
                await asyncio.sleep(0)  # let the loop write and read, as a call's would


WORKLOADS: dict[str, Callable[[int], None]] = {
    "inbound-8k": _inbound(8000),
    "inbound-16k": _inbound(16000),
    "outbound": _outbound,
    "parse-twilio": _parse_twilio,
    "parse-live": _parse_live,
    "send-websockets": _send(fast=False),
    "send-now": _send(fast=True),
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agent.bench.perframe WORKLOAD COUNT``: run one workload ``COUNT`` times."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in WORKLOADS or not args[1].isdigit():
        print(f"usage: python -m agent.bench.perframe {{{','.join(WORKLOADS)}}} COUNT")
        return 2
    WORKLOADS[args[0]](int(args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
