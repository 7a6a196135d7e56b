"""``/readyz`` says unready while the call records' writes fail (a page of the file zeroed under
the running server), so a balancer sends new calls to a replica that can record them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp

from agent.server.state import RECORDS

from .conftest import BridgeFactory


def zero_calls_root_page(db: Path) -> None:
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'calls'").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with db.open("r+b") as file:
        file.seek((int(root[0]) - 1) * 4096)
        file.write(b"\0" * 4096)


async def test_readyz_is_unready_while_record_writes_fail(
    start_bridge: BridgeFactory, tmp_path: Path
) -> None:
    bridge = await start_bridge()
    db = Path(bridge.settings.database_url.removeprefix("sqlite:///"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{bridge.url}/readyz") as resp:
            assert resp.status == 200

        zero_calls_root_page(db)
        recorder = bridge.app[RECORDS].recorder("CA" + "d" * 32)
        recorder.ended(reason="caller hung up", ended_at=1.0, summary={})
        await bridge.app[RECORDS].flush()

        async with session.get(f"{bridge.url}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "unavailable"
        assert [p for p in body["problems"] if p.startswith("call records failing: ")]
