"""Why a Live connection attempt failed, as one word from a small fixed set, and whether trying
again can help: pure functions of the close code, the close reason and the handshake's status.

A bad API key, an unknown model or a project without access are *refusals*: every attempt fails
the same way, so a call that retries them only keeps its caller in silence (12 attempts over
~14 s before this module existed). The link gives up on the first one and the call plays its
fallback at once; the start-up preflight (:mod:`agent.live.preflight`) reports them on
``/readyz``.

How Google refuses (the Developer API accepts the WebSocket handshake and refuses with a close
frame once it has read the key and the ``setup``; Vertex AI refuses the handshake itself):

* a bad or expired key: 1007 "API key not valid. Please pass a valid API key." / "API key
  expired. Please renew the API key." (the Developer API's ``API_KEY_INVALID``, the same text
  its REST methods answer with HTTP 400: https://ai.google.dev/gemini-api/docs/troubleshooting);
  Vertex AI: HTTP 401 at the handshake;
* an unknown or retired model, or one the endpoint does not serve: 1008 "models/X is not found
  for API version v1beta, or is not supported for bidiGenerateContent." (Live API reference,
  https://ai.google.dev/api/live; a Developer API model name on Vertex AI closes 1008 the same
  way: https://github.com/livekit/agents/pull/4611);
* no permission: "Your API key doesn't have the required permissions." (``PERMISSION_DENIED``,
  https://ai.google.dev/gemini-api/docs/troubleshooting; HTTP 403 at Vertex AI's handshake), and
  1007 "User location is not supported for the API use." (``FAILED_PRECONDITION`` on the same
  page; as a Live close: https://github.com/google-gemini/cookbook/issues/781).

Everything else (1011 "Internal error", a quota 1011, a dropped socket, a timeout) may pass and is
retried with backoff as before. A 1007 with any other reason ("Request contains an invalid
argument.") is a ``protocol`` failure: it is how a stale resumption handle is refused too, which
the link answers by starting afresh.
"""

from __future__ import annotations

from typing import Final, Literal

FailureKind = Literal["auth", "model", "permission", "timeout", "refused", "protocol", "other"]

#: Every kind, for the ``live_connect_failures_total{reason}`` label (a fixed, small set).
FAILURE_KINDS: Final[frozenset[str]] = frozenset(
    {"auth", "model", "permission", "timeout", "refused", "protocol", "other"}
)
#: The kinds that no retry can fix: the call gives up on the first one.
PERMANENT: Final[frozenset[str]] = frozenset({"auth", "model", "permission"})

#: What to do about each kind, for ``/readyz``, ``agent doctor`` and the ``live.refused`` line.
FIXES: Final[dict[str, str]] = {
    "auth": "set GEMINI_API_KEY to a valid key from https://aistudio.google.com/apikey "
    "(Vertex AI: check the Application Default Credentials)",
    "model": "set the agent's model: to one the Live API serves (see "
    "https://ai.google.dev/gemini-api/docs/models; Vertex AI names differ)",
    "permission": "give the key's project (or the Vertex AI service account) access to the "
    "Live API and the model, from a supported region",
    "timeout": "check that the bridge can reach the Live API (LIVE_API_URL, proxies, firewall)",
    "refused": "check LIVE_API_URL and the network path to the Live API",
    "protocol": "check the agent's Live settings (agent check) and LIVE_BACKEND",
    "other": "the Live API failed; it usually recovers: see the error and Google's status page",
}

CLOSE_INVALID: Final = 1007
CLOSE_POLICY: Final = 1008


def classify_close(code: int | None, reason: str) -> FailureKind:
    """The kind of failure a close frame (``code``, ``reason``) during setup means."""
    text = reason.lower()
    # Before the key: "Your API key doesn't have the required permissions." is about access.
    if "permission" in text or "location is not supported" in text:
        return "permission"
    if "api key" in text or "api_key" in text:
        return "auth"
    if code == CLOSE_POLICY and ("not found" in text or "not supported for bidi" in text):
        return "model"
    if code == CLOSE_INVALID:
        return "protocol"
    return "other"


def classify_status(status: int) -> FailureKind:
    """The kind of failure an HTTP status answering the WebSocket handshake means."""
    if status == 401:
        return "auth"
    if status == 403:
        return "permission"
    # 404 is no Live API at that URL (a wrong LIVE_API_URL), not a wrong model: the model is
    # named in the setup, after the handshake. Like any other status, worth another try.
    return "refused"


def is_permanent(kind: str) -> bool:
    """No retry can fix it: the key, the model or the permission must change first."""
    return kind in PERMANENT
