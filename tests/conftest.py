"""The whole suite's log output goes through the product's logging chain and is scanned for secrets.

At start-up this plugin calls :func:`agent.observability.logging.configure_logging` (JSON, INFO)
with a scan file as its output, so every line any test makes the product log, with structlog or
with the standard library (aiohttp, websockets), is rendered exactly as in production. pytest still
captures the same records for its reports ("Captured log"), rendered by the product's console
formatter.

At the end of the session the scan file is searched for every secret the suite knows. A secret
found fails the session (exit status 1) and the summary says which secret (by name), on which
lines, in which events. Secrets are known three ways:

* module constants of test modules whose names say secret (``AUTH_TOKEN``, ``SECRET``,
  ``API_KEY``, ``*_PASSWORD``...), collected at collection time;
* every stream token any :class:`~agent.telephony.webhooks.StreamTokens` issues during the session,
  and the key each one is made with (the Twilio auth token, when a test sets one);
* whatever a test registers with the ``register_secret`` fixture.

Values shorter than 8 characters are not scanned for (they would match innocent text), the same
bound as the product's redactor. ``AGENT_TEST_LOG_FILE=path`` keeps the session's log lines in that
file, for reading; otherwise the file is deleted unless a secret was found in it.

Tests that call ``configure_logging`` themselves should use the ``log_capture`` fixture, which
restores the suite's set-up afterwards and keeps the scan's handler attached meanwhile; as a safety
net the set-up is also restored after any test that changed it. ``structlog.testing.capture_logs``
works as usual: while it is active, structlog events go to its list instead (and are not scanned).
"""

from __future__ import annotations

import glob
import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TextIO

import pytest
import structlog
from timing import timeout_factor

from agent.observability import logging as observability
from agent.telephony.webhooks import StreamTokens

SCAN_LEVEL = "info"
#: Set it to a path to keep the session's log lines there (JSON, one per line) for reading.
KEEP_LOG_ENV = "AGENT_TEST_LOG_FILE"
MIN_SECRET_LENGTH = observability.RedactSecrets.MIN_LENGTH
# Names of module constants that hold secrets in tests.
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:TOKEN|AUTH_TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY)S?$", re.IGNORECASE
)


@dataclass
class SecretScan:
    """The session's scan file and what to look for in it."""

    path: Path
    stream: TextIO
    handler: logging.Handler | None = None
    processors: Any = None
    secrets: dict[str, str] = field(default_factory=dict)  # value -> where it came from
    leaks: list[str] = field(default_factory=list)
    patches: pytest.MonkeyPatch = field(default_factory=pytest.MonkeyPatch)
    keep: bool = False  # the file was asked for (KEEP_LOG_ENV): never delete it

    def register(self, value: str | bytes | None, origin: str) -> None:
        """Look for ``value`` at the end of the session (short or undecodable values are not)."""
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                return  # random key bytes: they never appear as text
        if value and len(value) >= MIN_SECRET_LENGTH and value.isprintable():
            self.secrets.setdefault(value, origin)


_SCAN = pytest.StashKey[SecretScan]()


def _scan(config: pytest.Config) -> SecretScan:
    return config.stash[_SCAN]


# -- set-up and restore ----------------------------------------------------------------------------


def _configure(scan: SecretScan) -> None:
    """Install the suite's logging: the product's chain, JSON, into the scan file."""
    scan.handler = observability.configure_logging(SCAN_LEVEL, "json", stream=scan.stream)
    scan.processors = structlog.get_config()["processors"]


def _pytest_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if type(h).__module__.startswith("_pytest.")]


def _intact(scan: SecretScan) -> bool:
    root = logging.getLogger()
    return (
        scan.handler in root.handlers
        and structlog.get_config()["processors"] is scan.processors
        and root.level == logging.getLevelName(SCAN_LEVEL.upper())
        and not observability.NUMBER_MASK.enabled
    )


def _restore(scan: SecretScan) -> None:
    """Put the suite's set-up back after a test changed it, keeping pytest's own handlers."""
    kept = _pytest_handlers()
    _configure(scan)
    logging.getLogger().handlers.extend(kept)


@contextmanager
def reconfigured_logging(
    level: str = "info", fmt: str = "json", *, mask_numbers: bool = False
) -> Iterator[io.StringIO]:
    """``configure_logging`` into a buffer for a while, then the previous set-up back.

    The handlers installed before (the scan's, pytest's) stay attached meanwhile, so the suite's
    secret scan still sees every line.
    """
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    config = structlog.get_config()
    chatty = {name: logging.getLogger(name).level for name in ("websockets",)}
    masking = observability.NUMBER_MASK.enabled
    buffer = io.StringIO()
    observability.configure_logging(level, fmt, stream=buffer, mask_numbers=mask_numbers)
    root.handlers.extend(h for h in handlers if h not in root.handlers)
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        structlog.configure(**config)
        for name, chatty_level in chatty.items():
            logging.getLogger(name).setLevel(chatty_level)
        observability.NUMBER_MASK.enabled = masking


# -- hooks -----------------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout reads its settings
def pytest_configure(config: pytest.Config) -> None:
    # Scale the per-test hang guard by AGENT_TEST_TIMEOUT_FACTOR (tests/timing.py); an explicit
    # --timeout or PYTEST_TIMEOUT wins, as either does over the ini file.
    if config.getoption("timeout", None) is None and not os.environ.get("PYTEST_TIMEOUT"):
        configured = config.getini("timeout")
        if configured:
            config.option.timeout = float(configured) * timeout_factor()

    kept = os.environ.get(KEEP_LOG_ENV)
    if kept:
        path = Path(kept)
        stream = path.open("w", encoding="utf-8")
    else:
        fd, name = tempfile.mkstemp(prefix="agent-test-logs-", suffix=".jsonl")
        path, stream = Path(name), open(fd, "w", encoding="utf-8")  # noqa: SIM115 (closed at the end)
    scan = SecretScan(path, stream, keep=bool(kept))
    config.stash[_SCAN] = scan
    _configure(scan)

    # Every stream token issued, and the key it was made with, is a secret.
    original_init = StreamTokens.__init__
    original_issue = StreamTokens.issue

    def init(self: StreamTokens, secret: bytes, ttl_s: float = 60.0, **kind: Any) -> None:
        # The console's tickets too (their domain and prefix are the keyword arguments).
        scan.register(secret, "a StreamTokens key (TWILIO_AUTH_TOKEN)")
        original_init(self, secret, ttl_s, **kind)

    def issue(self: StreamTokens, call_sid: str, now: float, **facts: Any) -> str:
        token = original_issue(self, call_sid, now, **facts)
        scan.register(token, f"the stream token issued for {call_sid}")
        return token

    scan.patches.setattr(StreamTokens, "__init__", init)
    scan.patches.setattr(StreamTokens, "issue", issue)


def pytest_sessionstart(session: pytest.Session) -> None:
    # pytest's captured-log sections show the product's console lines, masked like the real ones.
    plugin = session.config.pluginmanager.get_plugin("logging-plugin")
    for name in ("caplog_handler", "report_handler"):
        handler = getattr(plugin, name, None)
        if isinstance(handler, logging.Handler):
            handler.setFormatter(observability.log_formatter("console"))


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    scan = _scan(config)
    seen: set[str] = set()
    for item in items:
        module = getattr(item, "module", None)
        if isinstance(module, ModuleType) and module.__name__ not in seen:
            seen.add(module.__name__)
            for name, value in vars(module).items():
                if _SECRET_NAME.search(name) and isinstance(value, str | bytes):
                    scan.register(value, f"{module.__name__}.{name}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    scan = _scan(item.config)
    if not _intact(scan):
        _restore(scan)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    scan = _scan(session.config)
    if scan.handler is not None:
        scan.handler.flush()
    scan.stream.flush()
    scan.leaks = _find_leaks(scan)
    if scan.leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    scan = config.stash.get(_SCAN, None)
    if scan is None or not scan.leaks:
        return
    terminalreporter.section("secrets in log output", red=True, bold=True)
    for leak in scan.leaks:
        terminalreporter.line(leak, red=True)
    terminalreporter.line(f"(all log lines of the session: {scan.path})")


def pytest_unconfigure(config: pytest.Config) -> None:
    scan = config.stash.get(_SCAN, None)
    if scan is None:
        return
    scan.patches.undo()
    if scan.handler is not None:
        logging.getLogger().removeHandler(scan.handler)
    scan.stream.close()
    structlog.reset_defaults()
    if not scan.leaks and not scan.keep:
        scan.path.unlink(missing_ok=True)


def _find_leaks(scan: SecretScan) -> list[str]:
    """One line per secret found: which secret, and where (line numbers, events, loggers)."""
    if not scan.secrets:
        return []
    secrets = sorted(scan.secrets, key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, secrets)))
    found: dict[str, list[str]] = {}
    with scan.path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            for match in set(pattern.findall(line)):
                event = re.search(r'"event": "((?:\\.|[^"\\]){0,80})', line)
                logger = re.search(r'"logger": "([^"]*)"', line)
                what = pattern.sub("<secret>", event.group(1)) if event else "?"
                found.setdefault(match, []).append(
                    f"line {number} ({what} from {logger.group(1) if logger else '?'})"
                )
    return [
        f"{scan.secrets[value]} ({value[:4]}...) appears {len(where)} time(s): "
        + "; ".join(where[:5])
        + (" ..." if len(where) > 5 else "")
        for value, where in found.items()
    ]


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def register_secret(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``register_secret(value)``: fail the session if ``value`` appears in any log line.
    Returns the value, so a test can write ``token = register_secret("...")``."""
    scan = _scan(request.config)

    def register(value: str) -> str:
        scan.register(value, f"registered by {request.node.nodeid}")
        return value

    return register


@pytest.fixture
def log_capture() -> Callable[..., Any]:
    """``with log_capture(level, fmt, mask_numbers=...) as buffer:`` logs into ``buffer`` through
    ``configure_logging`` (the scan keeps seeing every line), and restores the suite's set-up."""
    return reconfigured_logging


def pytest_report_header(config: pytest.Config) -> str:
    return f"log output scanned for secrets: {_scan(config).path} (pid {os.getpid()})"


# -- A throwaway PostgreSQL, shared by the call-record and CRM tests ----------------------------


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine without PostgreSQL; fail in CI, which installs it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL variant cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL for the whole test session: Unix socket only, in a private
    directory, no fsync. Yields the admin URL. Skips on a machine without PostgreSQL; fails under
    CI=true (CI installs it), so its variants can never be skipped silently there."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed")
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="agent-crm-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            _unavailable("running as root and there is no postgres user to run the server")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = str(root / "data")

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=60)

    options = f"-k {root} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    try:
        run(initdb, "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", data, "-w", "-l", str(root / "log"), "-o", options, "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql://postgres@/postgres?host={root}"
    finally:
        run(pg_ctl, "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Callable[[], str]:
    """A factory of new, empty PostgreSQL databases on the session's server; yields their URLs."""
    admin_url: str = request.getfixturevalue("postgres_server")

    def new_database() -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return admin_url.replace("/postgres?", f"/{name}?")

    return new_database
