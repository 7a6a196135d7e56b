"""What the voice webhook needs: TwiML that connects a call to our media stream, Twilio request
signatures, and the stream tokens that tie a media stream back to a signed webhook.

Everything here is pure (no I/O, no clock unless passed in) so it is tested with literal values and
checked against the official ``twilio`` library in ``tests/conformance``.

Why stream tokens: Twilio's media-stream WebSocket cannot be authenticated reliably by its
``X-Twilio-Signature`` alone (which URL is signed is not clearly documented), and Twilio has no
fixed IP ranges. The voice webhook, whose signature we *can* verify, therefore issues a short-lived,
single-use token bound to the CallSid and passes it to the stream as a ``<Parameter>``; the stream
is refused unless ``start.customParameters`` carries a valid one for that CallSid.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

__all__ = [
    "StreamTicket",
    "StreamTokens",
    "UsedNonces",
    "compute_signature",
    "connect_stream_twiml",
    "console_tickets",
    "hangup_twiml",
    "stream_url_from_public_url",
    "verify_signature",
]

#: Twilio rejects a <Parameter> whose name and value together reach this many characters.
PARAMETER_LIMIT: Final = 500

_XML_DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>'
# Escape the quote we delimit attributes with, and the whitespace that XML attribute-value
# normalisation would otherwise turn into plain spaces, so values round-trip exactly.
_ATTR_ENTITIES: Final = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
# Characters XML 1.0 cannot carry at all, not even as character references.
_NOT_XML_CHAR: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# base64url without padding: anything else in a token is forged.
_URLSAFE: Final = re.compile(r"[A-Za-z0-9_-]+")
# Each text field of a ticket is at most this long, so a token always fits a <Parameter>.
_FIELD_LIMIT: Final = 64

_DEFAULT_PORTS: Final = {"https": 443, "wss": 443, "http": 80, "ws": 80}
_STREAM_SCHEMES: Final = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}


# -- TwiML -----------------------------------------------------------------------------------------


def connect_stream_twiml(
    stream_url: str,
    parameters: Mapping[str, str],
    *,
    status_callback: str | None = None,
    action: str | None = None,
) -> str:
    """TwiML for the voice webhook: ``<Connect><Stream>`` to ``stream_url`` with ``parameters``.

    With ``action``, Twilio requests that URL when the stream ends while the call is still up
    (https://www.twilio.com/docs/voice/twiml/connect#action: "When the <Connect> verb ends,
    Twilio sends an HTTP request to this URL"), and runs the TwiML it answers: how a call moves
    to another replica when its stream's replica dies or hands it over.

    The parameters reach the stream as ``start.customParameters``; this is the only way to pass data
    to it, since Twilio does not allow a query string on the stream URL. Raises ``ValueError`` for a
    URL that is not ``ws://``/``wss://`` or carries a query or fragment, for a parameter whose name
    and value reach Twilio's 500-character limit, and for text XML cannot represent.
    """
    _check_stream_url(stream_url)
    stream_attrs = f"url={_attr(stream_url)}"
    if status_callback is not None:
        stream_attrs += f" statusCallback={_attr(status_callback)}"
    params = []
    for name, value in parameters.items():
        if not name:
            raise ValueError("a <Parameter> name must not be empty")
        if len(name) + len(value) >= PARAMETER_LIMIT:
            raise ValueError(
                f"<Parameter> {name!r}: name and value must be under {PARAMETER_LIMIT} characters"
            )
        params.append(f"<Parameter name={_attr(name)} value={_attr(value)}/>")
    connect = "<Connect>" if action is None else f'<Connect action={_attr(action)} method="POST">'
    return (
        f"{_XML_DECLARATION}<Response>{connect}<Stream {stream_attrs}>"
        f"{''.join(params)}</Stream></Connect></Response>"
    )


def hangup_twiml() -> str:
    """TwiML that ends the call."""
    return f"{_XML_DECLARATION}<Response><Hangup/></Response>"


def stream_url_from_public_url(public_url: str, path: str = "/twilio/stream") -> str:
    """The media-stream URL under the service's public base URL: https becomes wss, http becomes ws.

    Host, port and any base path (a reverse-proxy prefix) are kept, so
    ``https://example.com:8443/bot`` gives ``wss://example.com:8443/bot/twilio/stream``. Raises
    ``ValueError`` if ``public_url`` is not an absolute http(s) URL or carries a query or fragment,
    which a stream URL may not have.
    """
    parts = urlsplit(public_url)
    scheme = _STREAM_SCHEMES.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"public URL must be an absolute http(s) URL, got {public_url!r}")
    if "?" in public_url or "#" in public_url:
        raise ValueError(f"public URL must not have a query or fragment, got {public_url!r}")
    full_path = parts.path.rstrip("/") + "/" + path.lstrip("/")
    return urlunsplit((scheme, parts.netloc, full_path, "", ""))


def _check_stream_url(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        raise ValueError(f"stream URL is not a valid URL: {url!r}") from exc
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"stream URL must be an absolute ws:// or wss:// URL, got {url!r}")
    # Test the raw text, not parts.query: "wss://h/s?" has an empty query but still a '?'.
    if "?" in url:
        raise ValueError(f"stream URL must not have a query string (use parameters), got {url!r}")
    if "#" in url:  # RFC 6455: fragments MUST NOT be used in WebSocket URIs
        raise ValueError(f"stream URL must not have a fragment, got {url!r}")


def _attr(value: str) -> str:
    """A double-quoted, escaped XML attribute value."""
    bad = _NOT_XML_CHAR.search(value)
    if bad:
        raise ValueError(f"character {bad.group()!r} cannot appear in XML: {value!r}")
    return '"' + escape(value, _ATTR_ENTITIES) + '"'


# -- webhook signatures ----------------------------------------------------------------------------


def compute_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a request to ``url`` with form ``params``.

    The signed text is the full URL (query string included) followed by each parameter's name and
    value, sorted by name, with no separators; the signature is its HMAC-SHA1 under the auth token,
    in base64.
    """
    data = url + "".join(name + params[name] for name in sorted(params))
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def verify_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) signs this request.

    ``url`` must be the URL as Twilio requested it; behind a proxy, rebuild it from the configured
    public base URL rather than the Host header. As in twilio-python's ``RequestValidator``, the URL
    is also tried with the scheme's default port added (if absent) or removed (if present), because
    Twilio is not consistent about it. A missing or empty signature is False; comparison is
    constant-time.
    """
    if not signature:
        return False
    # Header text is attacker-controlled: "replace" keeps odd characters from raising, and any
    # non-ASCII character already guarantees a mismatch with our base64.
    given = signature.encode("utf-8", "replace")
    try:
        return any(
            hmac.compare_digest(compute_signature(auth_token, candidate, params).encode(), given)
            for candidate in _port_variants(url)
        )
    except UnicodeEncodeError:  # lone surrogates in a URL or parameter: not something Twilio signed
        return False


def _port_variants(url: str) -> list[str]:
    """``url`` as given, plus the same URL with its scheme's default port added or removed."""
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # malformed netloc or port: only the URL as given can match
        return variants
    default = _DEFAULT_PORTS.get(parts.scheme)
    netloc = parts.netloc
    # Edit the netloc in place rather than via urlunsplit, which would also normalise the rest of
    # the URL (dropping an empty "?", for one) and so sign something Twilio did not.
    start = url.find("//") + 2
    if default is None or not netloc or url[start : start + len(netloc)] != netloc:
        return variants
    if port is None and not netloc.endswith(":"):
        new_netloc = f"{netloc}:{default}"
    elif port == default:
        # rpartition, not split: IPv6 hosts and userinfo contain ':' too.
        new_netloc = netloc.rpartition(":")[0]
    else:
        return variants
    variants.append(url[:start] + new_netloc + url[start + len(netloc) :])
    return variants


# -- stream tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamTicket:
    """What the voice webhook learned about a call, as its media stream reads it back from the
    signed token: enough for any replica, even one that never saw the webhook, to run the call."""

    call_sid: str
    nonce: str  # single use: a store of used nonces refuses a second stream with this ticket
    expires_ms: int  # on the clock the issuer was given (wall-clock ms since the epoch)
    agent: str = ""  # the agent the webhook chose ("" when it named none)
    from_number: str | None = None
    to_number: str | None = None
    caller_verified: bool = False  # Twilio's StirVerstat reported a passed attestation
    leg: int = 1  # which stream of the call this is: 2 and on continue it (<Connect action>)


class UsedNonces:
    """Which ticket nonces a process has already accepted, forgotten once their tickets expire
    (the expiry check alone rejects them then). The single-process store of used tickets."""

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._expiries: list[tuple[int, str]] = []  # heap of (expiry_ms, nonce) for pruning

    def claim(self, ticket: StreamTicket, now: float) -> bool:
        """Mark ``ticket`` used; False if it already was."""
        self._prune(now * 1000.0)
        if ticket.nonce in self._used:
            return False
        self._used.add(ticket.nonce)
        heapq.heappush(self._expiries, (ticket.expires_ms, ticket.nonce))
        return True

    def __len__(self) -> int:
        return len(self._used)

    def _prune(self, now_ms: float) -> None:
        while self._expiries and self._expiries[0][0] < now_ms:
            _, nonce = heapq.heappop(self._expiries)
            self._used.discard(nonce)


class StreamTokens:
    """Short-lived, single-use HMAC tokens bound to a CallSid, issued by the (signed) voice webhook
    as a ``<Parameter>`` and required on the media stream's ``start``.

    A token is ``"st2.{payload}.{mac}"``, all URL-safe: the payload is the :class:`StreamTicket`
    (CallSid, expiry in milliseconds on the clock passed as ``now``, a random nonce, the agent, the
    caller and called numbers, the attestation verdict, the leg) as compact JSON in base64url, and
    the MAC an HMAC-SHA256 over it. The payload is signed, not encrypted: it holds nothing Twilio
    does not already know. Issuing and opening keep no state; :meth:`verify` also consumes the
    ticket in this process's :class:`UsedNonces`. Several replicas share the secret and a store of
    used nonces instead (:mod:`agent.cluster`), so any of them can take any stream, once.
    """

    #: The MAC's domain and the tokens' prefix: the console's tickets (``console_tickets``) have
    #: their own, so a ticket of one kind never opens the other's stream, whatever the secret.
    DOMAIN: Final = b"twilio-stream-token/v2"
    PREFIX: Final = "st2."
    # Bound the work done on attacker-supplied text before the MAC is checked.
    _MAX_TOKEN: Final = PARAMETER_LIMIT

    def __init__(
        self,
        secret: bytes,
        ttl_s: float = 60.0,
        *,
        domain: bytes = DOMAIN,
        prefix: str = PREFIX,
    ) -> None:
        if not secret:
            raise ValueError("stream token secret must not be empty")
        if not ttl_s > 0:
            raise ValueError(f"stream token TTL must be positive, got {ttl_s!r}")
        self._secret = secret
        self._domain, self._prefix = domain, prefix
        self._ttl_ms = ttl_s * 1000.0
        self._used = UsedNonces()

    def issue(
        self,
        call_sid: str,
        now: float,
        *,
        agent: str = "",
        from_number: str | None = None,
        to_number: str | None = None,
        caller_verified: bool = False,
        leg: int = 1,
    ) -> str:
        """A fresh token for ``call_sid``, valid until ``now + ttl_s`` (inclusive, to the ms)."""
        if not call_sid:
            raise ValueError("call_sid must not be empty")
        fields = [
            call_sid[:_FIELD_LIMIT],
            int(now * 1000.0 + self._ttl_ms),
            secrets.token_urlsafe(16),
            agent[:_FIELD_LIMIT],
            _short(from_number),
            _short(to_number),
            1 if caller_verified else 0,
            leg,
        ]
        # surrogatepass: a CallSid from JSON may hold a lone surrogate; carry it rather than raise.
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        payload = base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).rstrip(b"=")
        body = payload.decode("ascii")
        return f"{self._prefix}{body}.{self._mac(body)}"

    def open(self, token: str, call_sid: str, now: float) -> StreamTicket | None:
        """The ticket in ``token`` if we issued it for ``call_sid`` and it is unexpired; None for
        anything forged, malformed, mismatched or expired. Does not consume it."""
        if len(token) > self._MAX_TOKEN or not token.startswith(self._prefix):
            return None
        body, sep, mac = token[len(self._prefix) :].partition(".")
        if not (sep and body and mac and _URLSAFE.fullmatch(body)):
            return None
        if not hmac.compare_digest(self._mac(body).encode("ascii"), mac.encode("utf-8", "replace")):
            return None
        # Signed by us, so well-formed: the checks below guard against our own older versions.
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            fields = json.loads(raw.decode("utf-8", "surrogatepass"))
            sid, expires_ms, nonce, agent, caller, called, verified, leg = fields
        except (ValueError, TypeError):
            return None
        if sid != call_sid[:_FIELD_LIMIT] or not call_sid or not isinstance(expires_ms, int):
            return None
        if not isinstance(leg, int) or leg < 1:
            return None
        if now * 1000.0 > expires_ms:
            return None
        return StreamTicket(
            call_sid=call_sid,
            nonce=str(nonce),
            expires_ms=expires_ms,
            agent=str(agent or ""),
            from_number=caller if isinstance(caller, str) else None,
            to_number=called if isinstance(called, str) else None,
            caller_verified=verified == 1,
            leg=leg,
        )

    def verify(self, token: str, call_sid: str, now: float) -> StreamTicket | None:
        """:meth:`open`, then consume the ticket in this process: a second use is None."""
        ticket = self.open(token, call_sid, now)
        if ticket is None or not self._used.claim(ticket, now):
            return None
        return ticket

    def _mac(self, body: str) -> str:
        message = self._domain + b"\x00" + body.encode("ascii")
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


#: The console softphone's tickets (``/console/phone``): same format, another domain and prefix.
CONSOLE_DOMAIN: Final = b"console-call-ticket/v1"
CONSOLE_PREFIX: Final = "ct1."


def console_tickets(secret: bytes, ttl_s: float = 60.0) -> StreamTokens:
    """Tickets the console issues to its page for one softphone call, bound to the call's SID
    and single use like a stream token; neither kind opens the other's stream."""
    return StreamTokens(secret, ttl_s, domain=CONSOLE_DOMAIN, prefix=CONSOLE_PREFIX)


def _short(number: str | None) -> str | None:
    """A number as the ticket carries it: one too long to be a phone number or SIP address we could
    use is left out (the call then runs as if the caller ID were withheld)."""
    return number if number is not None and len(number) <= _FIELD_LIMIT else None
