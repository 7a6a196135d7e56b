"""Console tickets and Twilio stream tokens: one format, two keys apart, neither opens the other."""

from __future__ import annotations

from agent.telephony.webhooks import StreamTokens, console_tickets

SECRET = b"one-secret-for-both"
SID = "CO0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0


def test_a_console_ticket_opens_for_its_call_with_the_page_caller_id_unverified() -> None:
    tickets = console_tickets(SECRET)
    ticket = tickets.issue(SID, NOW, agent="acme-support", from_number="+15550100")
    assert ticket.startswith("ct1.")
    opened = tickets.open(ticket, SID, NOW + 59)
    assert opened is not None
    assert (opened.agent, opened.from_number, opened.caller_verified) == (
        "acme-support",
        "+15550100",
        False,
    )
    assert tickets.open(ticket, "CO" + "f" * 32, NOW) is None  # another call's
    assert tickets.open(ticket, SID, NOW + 61) is None  # expired


def test_a_console_ticket_is_not_a_stream_token_and_the_reverse() -> None:
    tickets, tokens = console_tickets(SECRET), StreamTokens(SECRET)
    assert tokens.open(tickets.issue(SID, NOW), SID, NOW) is None
    assert tickets.open(tokens.issue(SID, NOW), SID, NOW) is None


def test_a_ticket_with_the_prefix_swapped_does_not_verify() -> None:
    """The MAC covers a domain of its own: relabelling a ticket does not make it the other kind."""
    tickets, tokens = console_tickets(SECRET), StreamTokens(SECRET)
    relabelled = "st2." + tickets.issue(SID, NOW).removeprefix("ct1.")
    assert tokens.open(relabelled, SID, NOW) is None
