"""Reload without dropping calls: the current registry, swapped on SIGHUP or a file change.

:class:`AgentRegistryHolder` swaps in a new registry on SIGHUP (:func:`install_reload_on_sighup`)
or when the files change (:func:`watch_agent_files`, which compares :func:`files_fingerprint`);
if anything is wrong it keeps the old one and logs the problems. A call keeps the immutable
``AgentConfig`` it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import structlog

from agent.config.loader import (
    AgentCheck,
    AgentFilesError,
    EnvAllow,
    ToolCheck,
    agent_files,
    load,
)
from agent.config.registry import AgentRegistry

log = structlog.get_logger("agent.agents")

Fingerprint = tuple[tuple[str, int, int], ...]


def files_fingerprint(path: str | os.PathLike[str] | None) -> Fingerprint:
    """Names, modification times and sizes of the agent files: cheap to compare every few
    seconds. A missing folder has an empty fingerprint (its return is a change)."""
    try:
        files = agent_files(path)
    except OSError:
        return ()
    result = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        result.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(result)


class AgentRegistryHolder:
    """The current registry, replaced by :meth:`reload` only when the new files are all valid.

    Readers take ``holder.current`` once per call and keep what it returns; a reload never
    changes a registry, it swaps in another one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        registry: AgentRegistry | None = None,
        *,
        env: Mapping[str, str] | None = None,
        env_allow: EnvAllow | None = None,
        check_tools: ToolCheck | None = None,
        check_agent: AgentCheck | None = None,
        on_change: Callable[[AgentRegistry], None] | None = None,
        logger: Any = None,
    ) -> None:
        """Loads ``path`` now unless ``registry`` is given (raising AgentFilesError if invalid).
        ``on_change`` runs after each successful reload (e.g. to add new secrets to the log
        redaction); ``env`` defaults to the process environment at each reload, and
        ``env_allow`` says which of its variables the files may read (default ``AGENT_…``)."""
        self.path = path
        self._reloadable = True
        self._env = env
        self._env_allow = env_allow
        self._check_tools = check_tools
        self._check_agent = check_agent
        self._listeners: list[Callable[[AgentRegistry], None]] = []
        if on_change is not None:
            self._listeners.append(on_change)
        self._log = logger if logger is not None else log
        self._fingerprint = files_fingerprint(path)
        self._current = registry if registry is not None else self._load()
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, registry: AgentRegistry) -> AgentRegistryHolder:
        """A holder of agents built in code (tests, ``create_app(agent=...)``): there are no
        files, so a reload changes nothing and says so."""
        holder = cls(registry.path, registry)
        holder._reloadable = False
        return holder

    @property
    def current(self) -> AgentRegistry:
        """The registry new calls use."""
        return self._current

    def reload(self) -> list[str]:
        """Load the files again; swap the registry in if they are valid. Returns the problems
        (empty on success); on any problem the old registry stays. Logs either way."""
        if not self._reloadable:
            return self._not_reloadable()
        fingerprint = files_fingerprint(self.path)
        try:
            registry = self._load()
        except AgentFilesError as exc:
            self._fingerprint = fingerprint
            return self._failed(exc)
        self._fingerprint = fingerprint
        self._swap(registry)
        return []

    async def reload_async(self) -> list[str]:
        """:meth:`reload` with the file reading in a thread, so the event loop (and every
        call's audio) never waits for it; concurrent requests run one after the other."""
        if not self._reloadable:
            return self._not_reloadable()
        async with self._lock:
            fingerprint = await asyncio.to_thread(files_fingerprint, self.path)
            try:
                registry = await asyncio.to_thread(self._load)
            except AgentFilesError as exc:
                self._fingerprint = fingerprint
                return self._failed(exc)
            self._fingerprint = fingerprint
            self._swap(registry)
            return []

    async def reload_if_changed(self) -> bool:
        """Reload if a file was added, removed or modified since the last (attempted) load."""
        if not self._reloadable:
            return False
        fingerprint = await asyncio.to_thread(files_fingerprint, self.path)
        if fingerprint == self._fingerprint:
            return False
        await self.reload_async()
        return True

    def _not_reloadable(self) -> list[str]:
        problem = "the agents were configured in code, not loaded from files: nothing to reload"
        self._log.warning(
            "agents.reload_failed", problems=[problem], kept=sorted(self._current.agents)
        )
        return [problem]

    def _load(self) -> AgentRegistry:
        return load(
            self.path,
            env=self._env,
            env_allow=self._env_allow,
            check_tools=self._check_tools,
            check_agent=self._check_agent,
        )

    def _failed(self, exc: AgentFilesError) -> list[str]:
        problems = [str(p) for p in exc.problems]
        self._log.error(
            "agents.reload_failed",
            path=self._current.path,
            problems=problems,
            kept=sorted(self._current.agents),
        )
        return problems

    def _swap(self, registry: AgentRegistry) -> None:
        old = self._current
        self._current = registry
        self._log.info(
            "agents.reloaded",
            path=registry.path,
            agents=sorted(registry.agents),
            default=registry.default.name,
            added=sorted(set(registry.agents) - set(old.agents)),
            removed=sorted(set(old.agents) - set(registry.agents)),
            changed=sorted(
                name
                for name, agent in registry.agents.items()
                if name in old.agents and old.agents[name] != agent
            ),
        )
        for listener in self._listeners:
            listener(registry)

    def add_listener(self, listener: Callable[[AgentRegistry], None]) -> None:
        """Call ``listener`` with the new registry after each successful reload, as
        ``on_change`` (the server's: mask new secrets, reach the calls in progress)."""
        self._listeners.append(listener)


def install_reload_on_sighup(
    loop: asyncio.AbstractEventLoop, holder: AgentRegistryHolder, logger: Any = None
) -> Callable[[], None]:
    """Reload the agents whenever the process gets SIGHUP (``kill -HUP <pid>``). Returns a
    function that removes the handler and restores the previous one. Where the loop cannot
    handle signals (Windows), logs that and does nothing."""
    logger = logger if logger is not None else log
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None:
        logger.warning("agents.sighup_unavailable", reason="no SIGHUP on this platform")
        return lambda: None
    previous = signal.getsignal(hangup)
    tasks: set[asyncio.Task[list[str]]] = set()

    def on_hangup() -> None:
        logger.info("agents.reload_requested", signal="SIGHUP")
        task = loop.create_task(holder.reload_async())
        tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(hangup, on_hangup)
    except (NotImplementedError, RuntimeError) as exc:
        logger.warning("agents.sighup_unavailable", reason=str(exc))
        return lambda: None

    def uninstall() -> None:
        loop.remove_signal_handler(hangup)
        if previous is not None:
            signal.signal(hangup, previous)
        for task in tasks:
            task.cancel()

    return uninstall


async def watch_agent_files(holder: AgentRegistryHolder, interval_s: float) -> None:
    """Poll the agent files every ``interval_s`` seconds and reload when they change; runs
    until cancelled. Polling (not inotify) because it works the same on every platform and on
    mounted config volumes."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    while True:
        await asyncio.sleep(interval_s)
        await holder.reload_if_changed()


@contextlib.asynccontextmanager
async def reloading(
    holder: AgentRegistryHolder, *, interval_s: float = 0.0, logger: Any = None
) -> AsyncIterator[AgentRegistryHolder]:
    """SIGHUP reload, plus polling if ``interval_s`` > 0, for as long as the block runs (the
    server's lifetime: wrap it in an aiohttp ``cleanup_ctx``)."""
    uninstall = install_reload_on_sighup(asyncio.get_running_loop(), holder, logger)
    watcher = (
        asyncio.create_task(watch_agent_files(holder, interval_s), name="agents.watch")
        if interval_s > 0
        else None
    )
    try:
        yield holder
    finally:
        uninstall()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
