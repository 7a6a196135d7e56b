"""The console's softphone in a real browser: headless Chromium talks to ``agent serve``.

Debian's ``chromium`` (never a downloaded browser), driven by Playwright, with a fake microphone
fed from a WAV file: the test opens ``/console`` with the console credential (basic auth), presses
"Call", hears the agent's greeting (the page's played audio is not silent), speaks (the WAV),
sees the transcript of what it said in the page's ``log``, presses "Hang up", opens the ended
call's timeline picture from the page's list, and finds the call in ``agent calls list``. The
server runs as deployed, on the embedded Live API emulator.

Real time throughout (the browser plays audio at its own pace): a few seconds of audio, every
wait a bounded wait for something the page or the server shows, none a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from timing import scaled_timeout

from agent.audio.codec import write_wav
from agent.records.store import RecordStore

from .conftest import caller_clip
from .processes import free_port, run_cli, server_env, start_server

CHROMIUM = "/usr/bin/chromium"
AUTH_TOKEN = "console-test-auth-token-0123456789abcdef"
CONSOLE_TOKEN = "console-test-token-fedcba9876543210"
WAIT_MS = scaled_timeout(30.0) * 1000


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine without Chromium; fail in CI, which installs it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def fake_microphone(path: Path) -> Path:
    """What the caller says into the fake microphone: the greeting's length in silence (so it
    is heard, not talked over), the request, then silence for the agent's answer."""
    silence = bytes(2 * 8000 * 4)
    write_wav(path, silence + caller_clip("order-status") + bytes(2 * 8000 * 3), 8000)
    return path


@contextlib.asynccontextmanager
async def browser_page(wav: Path, tmp_path: Path) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("playwright is not installed (it is in the test extra)")
    if shutil.which(CHROMIUM) is None:
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            # Playwright gives every launch a fresh profile of its own (a new user-data-dir).
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
            ],
        )
        try:
            context = await browser.new_context(
                http_credentials={"username": "tester", "password": CONSOLE_TOKEN}
            )
            await context.grant_permissions(["microphone"])
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            assert not errors, f"the page threw: {errors}"
        finally:
            await browser.close()


async def wait_ended(db: Path, call_sid: str) -> None:
    """Until the server's record writer has committed the call's end (another process's thread:
    nothing to wait on but the row), bounded."""
    store = RecordStore.from_url(f"sqlite:///{db}")
    try:
        async with asyncio.timeout(scaled_timeout(20.0)):
            while True:
                record = await asyncio.to_thread(store.get_call, call_sid)
                if record is not None and record.ended_at is not None:
                    return
                await asyncio.sleep(0.1)  # a poll of another process's database
    finally:
        await store.close()


@pytest.mark.slow
@pytest.mark.real_time
async def test_a_browser_calls_the_agent_hears_it_speaks_and_hangs_up(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "calls.db"
    env = server_env(tmp_path, port, None, db, AUTH_TOKEN)
    env.update(CONSOLE_ENABLED="true", CONSOLE_TOKEN=CONSOLE_TOKEN)
    wav = fake_microphone(tmp_path / "caller.wav")
    server, log = await start_server(port, env, tmp_path)
    try:
        async with browser_page(wav, tmp_path) as page:
            await page.goto(f"http://127.0.0.1:{port}/console")
            await page.get_by_role("button", name="Call").click()
            # The greeting: audio the page received and played, not silence.
            await page.wait_for_function(
                "() => Number(document.getElementById('received').dataset.playedPeak) > 0.05",
                timeout=WAIT_MS,
            )
            call_sid = await page.locator("#call-sid").text_content()
            assert call_sid
            assert call_sid.startswith("CO")
            # What the caller said, transcribed, in the page's log.
            transcript = page.get_by_role("log", name="transcript")
            await transcript.get_by_text("caller:", exact=False).first.wait_for(timeout=WAIT_MS)
            await page.get_by_role("button", name="Hang up").click()
            await wait_ended(db, call_sid)
            # The ended call, from its record: listed, and its timeline drawn (the SVG loads).
            ended = page.locator("#recent-calls button", has_text="caller hung up")
            await ended.first.click(timeout=WAIT_MS)
            await page.wait_for_function(
                "() => { const image = document.querySelector('#timeline-picture img');"
                " return image !== null && image.complete && image.naturalWidth > 0; }",
                timeout=WAIT_MS,
            )
        code, out, err = await run_cli("calls", "list", env=env, cwd=tmp_path)
        assert code == 0, err
        row = next(line for line in out.splitlines() if call_sid in line)
        assert "caller hung up" in row
    finally:
        server.terminate()
        await server.wait()
        await log.finish()
