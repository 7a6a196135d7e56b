"""``http`` tools: one HTTP request per call, on the app's shared ``aiohttp`` session.

Templates. ``{name}`` in the URL is replaced by the argument, URL-encoded as one path or query
component (``quote(str(v), safe="")``), so ``../admin`` or ``1?x=2`` cannot change which resource
is asked for. The scheme and host must be literal in the configuration (``validate_http``), so no
argument can point the request at another server. Header values are templates too (raw text;
a line break is refused). In ``json_body`` a string that is exactly ``"{name}"`` becomes the
argument with its JSON type; any other string is a text template.

Arguments no template uses are not lost: with no ``json_body``, a POST/PUT/PATCH sends them as
its JSON body and a GET/DELETE as query parameters. Bound parameters (the caller's number) are
arguments like any other, so a backend can be told who is calling.

Redirects are not followed (the configured headers, API keys included, would go wherever a
redirect points): a 3xx is an error naming its status, so the configuration gets fixed.

Only GET, PUT and DELETE are retried (they are idempotent: doing them twice is doing them once),
at most ``retries`` times, on connection errors and 5xx, with a short exponential pause; the
tool's ``timeout_s`` bounds the whole thing. The response is read up to ``max_response_bytes``
(after decompression) and refused beyond it. JSON is parsed (and narrowed with ``select``, a
dotted path: ``data.order`` or ``items.0``); anything else comes back as text, truncated.

Cancellation (the call ended, the timeout fired) aborts the request: aiohttp closes the
connection, and the server sees the client go away.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
import structlog

from agent.config.tools import HttpTool
from agent.tools.base import ToolError

log = structlog.get_logger("agent.tools")

IDEMPOTENT_METHODS: Final = frozenset({"GET", "PUT", "DELETE"})
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
#: Non-JSON responses are cut to this many characters: the model reads them, the caller hears them.
TEXT_LIMIT: Final = 4000
_BACKOFF_S: Final = 0.1
_BACKOFF_MAX_S: Final = 1.0

# ``{name}`` (a placeholder), ``{{`` and ``}}`` (literal braces). Anything else in braces is text.
_TEMPLATE: Final = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(template: str) -> set[str]:
    """The argument names ``template`` uses."""
    return {m.group(1) for m in _TEMPLATE.finditer(template) if m.group(1)}


def tool_placeholders(tool: HttpTool) -> set[str]:
    """Every argument name the URL, header and JSON-body templates use."""
    names = placeholders(tool.url)
    for value in tool.headers.values():
        names |= placeholders(value)
    if tool.json_body is not None:
        for text in _strings_in(tool.json_body):
            names |= placeholders(text)
    return names


def validate_http(tool: HttpTool, known: set[str]) -> list[str]:
    """Problems with an ``http`` tool's configuration; ``known`` are its parameters' names."""
    problems = []
    parts = urlsplit(tool.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(f"url {tool.url!r} must start with http:// or https:// and a host")
    elif placeholders(f"{parts.scheme}://{parts.netloc}"):
        problems.append(
            f"url {tool.url!r}: the scheme and host must be literal (no {{placeholders}}), "
            "so no argument can send the request to another server"
        )
    unknown = sorted(tool_placeholders(tool) - known)
    if unknown:
        problems.append(f"templates use undeclared argument(s): {', '.join(unknown)}")
    return problems


async def run_http(
    tool: HttpTool, arguments: Mapping[str, Any], http: aiohttp.ClientSession
) -> Any:
    """Make the request ``tool`` describes with ``arguments``; the (selected) response."""
    url = _render(tool.url, arguments, encode=True)
    headers = {name: _header(name, value, arguments) for name, value in tool.headers.items()}
    unused = {k: v for k, v in arguments.items() if k not in tool_placeholders(tool)}
    body: Any = None
    query: dict[str, str] | None = None
    if tool.json_body is not None:
        body = _render_json(tool.json_body, arguments)
    elif tool.method in _BODY_METHODS:
        body = unused
    elif unused:
        query = {k: _text(v) for k, v in unused.items()}
    attempts = 1 + (tool.retries if tool.method in IDEMPOTENT_METHODS else 0)
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            async with http.request(
                tool.method,
                url,
                headers=headers,
                json=body,
                params=query,
                raise_for_status=False,
                # A redirect would carry the configured headers (API keys) to wherever the
                # service points; the configured URL must be the final one.
                allow_redirects=False,
            ) as response:
                if response.status >= 500 and not last:
                    log.info("tool.http_retry", status=response.status, attempt=attempt + 1)
                    await _pause(attempt)
                    continue
                return await _result(tool, response)
        except aiohttp.ClientConnectionError as exc:
            if last:
                raise ToolError("could not reach the service") from exc
            log.info("tool.http_retry", error=type(exc).__name__, attempt=attempt + 1)
            await _pause(attempt)
        except aiohttp.ClientPayloadError as exc:
            raise ToolError("the service's response was cut off") from exc
        except aiohttp.ClientError as exc:
            raise ToolError("the request to the service failed") from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def _pause(attempt: int) -> None:
    await asyncio.sleep(min(_BACKOFF_MAX_S, _BACKOFF_S * 2**attempt))


async def _result(tool: HttpTool, response: aiohttp.ClientResponse) -> Any:
    if not 200 <= response.status < 300:
        reason = f" {response.reason}" if response.reason else ""
        raise ToolError(f"the service answered HTTP {response.status}{reason}")
    body = await _read_capped(response, tool.max_response_bytes)
    if _is_json(response.content_type):
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ToolError("the service answered malformed JSON") from exc
        return _select(data, tool.select) if tool.select else data
    if tool.select:
        raise ToolError(
            f"the service answered {response.content_type or 'no content type'}, not JSON"
        )
    text = body.decode(_charset(response), errors="replace")
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "…"


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of body; ``ToolError`` if there are more (read ``limit + 1`` to
    know, never the whole of an oversized or endless body)."""
    too_large = ToolError(f"the service's response is larger than {limit} bytes")
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    data = bytearray()
    while len(data) <= limit:
        chunk = await response.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise too_large
    return bytes(data)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _charset(response: aiohttp.ClientResponse) -> str:
    charset = response.charset or "utf-8"
    try:
        "".encode(charset)
    except LookupError:
        return "utf-8"
    return charset


def _select(data: Any, path: str) -> Any:
    """``data`` narrowed to the dotted ``path`` (numbers index lists)."""
    for key in path.split("."):
        if isinstance(data, Mapping) and key in data:
            data = data[key]
        elif (
            isinstance(data, list)
            and key.lstrip("-").isdigit()
            and -len(data) <= int(key) < len(data)
        ):
            data = data[int(key)]
        else:
            raise ToolError(f"the service's answer has no {path}")
    return data


def _render(template: str, arguments: Mapping[str, Any], *, encode: bool) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]  # {{ -> {, }} -> }
        value = arguments.get(name)
        text = "" if value is None else _text(value)
        if not encode:
            return text
        if text in ("", ".", ".."):
            # Percent-encoding leaves dots alone and URL normalisation collapses dot segments:
            # "{id}/details" with id=".." would become a request for another path.
            raise ToolError(f"{name} cannot be empty, '.' or '..'")
        return quote(text, safe="")

    return _TEMPLATE.sub(replace, template)


def _header(name: str, template: str, arguments: Mapping[str, Any]) -> str:
    value = _render(template, arguments, encode=False)
    if "\r" in value or "\n" in value:
        raise ToolError(f"the value for header {name} contains a line break")
    return value


def _render_json(template: Any, arguments: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        whole = _WHOLE_PLACEHOLDER.fullmatch(template)
        if whole:
            return arguments.get(whole.group(1))
        return _render(template, arguments, encode=False)
    if isinstance(template, Mapping):
        return {key: _render_json(value, arguments) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [_render_json(value, arguments) for value in template]
    return template


def _text(value: Any) -> str:
    """An argument as template text: JSON's spelling for booleans, lists and objects."""
    if isinstance(value, bool | list | dict):
        return json.dumps(value)
    return str(value)


def _strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings_in(item)
