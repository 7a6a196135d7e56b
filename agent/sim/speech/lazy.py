"""One speech engine per process, built on first use: loading a model takes long, and a wheel
that is not installed is found out once and remembered, not retried on every utterance."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LazyEngine(Generic[T]):
    """``build()`` on first :meth:`get`; ``None`` from then on if it raised one of ``missing``.

    Hold :attr:`lock` around :meth:`get` and every use of the engine: the engines are C
    libraries with process-wide state, one caller at a time."""

    def __init__(self, build: Callable[[], T], missing: tuple[type[Exception], ...]) -> None:
        self.lock = threading.Lock()
        self._build = build
        self._missing_errors = missing
        self._engine: T | None = None
        self._missing = False

    def get(self) -> T | None:
        if self._engine is None and not self._missing:
            try:
                self._engine = self._build()
            except self._missing_errors:
                self._missing = True
        return self._engine
