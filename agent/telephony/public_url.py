"""Is ``PUBLIC_URL`` the URL Twilio uses? Pure diagnostics from a request's headers, for the two
ways a wrong one costs an hour: a webhook rejected with 403 (Twilio signed the URL it requested,
the bridge checked another), and TwiML that sends Twilio's media stream to ``ws://127.0.0.1``.

Twilio computes ``X-Twilio-Signature`` over the exact URL it requested (scheme, host, port, path
and query) followed by the POST parameters, so behind a tunnel or a proxy the bridge cannot take
that URL from its own socket: it rebuilds it from ``PUBLIC_URL``
(https://www.twilio.com/docs/usage/webhooks/webhooks-security). Checking against "a URL that is
not exactly the same as the webhook URL Twilio used" is the first cause Twilio lists for a
signature that does not verify (https://www.twilio.com/docs/api/errors/57012).

Proxies and tunnels (ngrok, Cloudflare, a Kubernetes ingress) say where the request was sent in
``X-Forwarded-Proto`` and ``X-Forwarded-Host``; the bridge does not trust those for the check
itself (anyone can send them), only to suggest the ``PUBLIC_URL`` to set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

#: Header values are logged cut to this many characters: a client chooses them.
_MAX_HEADER_CHARS: Final = 200


def _first(value: str | None) -> str | None:
    """The first of a proxy chain's comma-separated values, trimmed and bounded."""
    if value is None:
        return None
    return value.split(",")[0].strip()[:_MAX_HEADER_CHARS] or None


def host_name(host: str) -> str:
    """``host`` without its port and brackets: ``[::1]:8080`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def is_loopback_host(host: str | None) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1`` (with or without a port); None: not known."""
    if not host:
        return False
    name = host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def url_seen(headers: Mapping[str, str], scheme: str, path_qs: str) -> str | None:
    """The URL the request says it was sent to: ``X-Forwarded-Proto``/``X-Forwarded-Host`` when
    a proxy set them, else its own scheme and ``Host``. None without any host."""
    host = _first(headers.get("X-Forwarded-Host")) or _first(headers.get("Host"))
    if host is None:
        return None
    proto = _first(headers.get("X-Forwarded-Proto")) or scheme
    return f"{proto}://{host}{path_qs}"


def signature_rejected_fields(
    public_url: str, path_qs: str, scheme: str, headers: Mapping[str, str]
) -> dict[str, object]:
    """The fields of ``twilio.signature_rejected`` beyond the path and CallSid: the URL the
    signature was checked against, the ``Host`` and ``X-Forwarded-*`` seen, and what to do.
    Never the signature or the token."""
    checked = public_url + path_qs
    seen = url_seen(headers, scheme, path_qs)
    if seen is not None and seen != checked:
        suggested = seen[: len(seen) - len(path_qs)] if path_qs else seen
        hint = (
            f"the request was sent to {seen}, but the signature was checked against {checked}: "
            f"if Twilio requests {seen}, set PUBLIC_URL={suggested}"
        )
    else:
        hint = (
            "the URL matches what the request says: check that TWILIO_AUTH_TOKEN is the auth "
            "token of the account that owns the number (and that PUBLIC_URL is the URL "
            "configured in Twilio's console, including any port)"
        )
    return {
        "checked_url": checked,
        "host": _first(headers.get("Host")),
        "x_forwarded_proto": _first(headers.get("X-Forwarded-Proto")),
        "x_forwarded_host": _first(headers.get("X-Forwarded-Host")),
        "hint": hint,
    }


def loopback_public_url_warning(
    public_url: str,
    stream_url: str,
    remote: str | None,
    headers: Mapping[str, str],
) -> str | None:
    """A warning when a loopback ``PUBLIC_URL`` (or stream URL) answers a request that came from
    elsewhere: Twilio would be told to stream to ``ws://127.0.0.1:...``, which is its own machine.
    None when nothing is wrong (both loopback, as in local tests, or the URLs are public)."""
    public_host = urlsplit(public_url).hostname
    stream_host = urlsplit(stream_url).hostname
    loopback_urls = [
        name
        for name, host in (("PUBLIC_URL", public_host), ("the stream URL", stream_host))
        if is_loopback_host(host)
    ]
    if not loopback_urls:
        return None
    seen_from = [
        f"{label} {value}"
        for label, value in (
            ("remote address", remote),
            ("Host", _first(headers.get("Host"))),
            ("X-Forwarded-Host", _first(headers.get("X-Forwarded-Host"))),
        )
        if value is not None and not is_loopback_host(value)
    ]
    if not seen_from:
        return None
    suggested = url_seen(headers, "https", "")
    verb = "are" if len(loopback_urls) > 1 else "is"
    return (
        f"{' and '.join(loopback_urls)} {verb} on loopback ({public_url}; streams to {stream_url}) "
        f"but this request came from elsewhere ({', '.join(seen_from)}): Twilio cannot reach "
        f"127.0.0.1. Set PUBLIC_URL to the URL Twilio uses"
        + (f", e.g. PUBLIC_URL={suggested}" if suggested and "://" in suggested else "")
    )
