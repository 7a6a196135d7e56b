"""The embedded demo CRM: customers, orders, appointments and tickets in one SQLite file.

It gives a fresh checkout something real to talk about: ``agent call`` from the default number
(+15555550100) reaches a known customer with orders in several states. Tables (the contract that
example agents' ``sql`` tools are written against; see :mod:`agent.crm.seed`)::

    customers     id, name, phone (UNIQUE, E.164), email, tier (standard | gold | platinum)
    orders        id ('A1017'), customer_id, status (processing | shipped | delivered |
                  cancelled | returned), eta (ISO date), total (USD), items (text)
    appointments  id, customer_id, starts_at ('YYYY-MM-DDTHH:MM', local), topic, created_by_call;
                  UNIQUE (created_by_call, starts_at)
    tickets       id, customer_id (NULL: unknown caller), subject, body, created_at (ISO UTC),
                  created_by_call

Tools must scope every query by the caller, with the caller's number *bound* from the call
context (``bind: {caller_number: caller_number}``) so the model cannot substitute another::

    SELECT o.id, o.status, o.eta, o.items FROM orders o
      JOIN customers c ON c.id = o.customer_id
     WHERE o.id = :order_id AND c.phone = :caller_number

and booking is idempotent per call (``call_sid`` bound to ``created_by_call``): a repeated
function call books nothing more (``{"rows_affected": 0}``)::

    INSERT INTO appointments (customer_id, starts_at, topic, created_by_call)
    SELECT id, :starts_at, :topic, :call_sid FROM customers WHERE phone = :caller_number
    ON CONFLICT DO NOTHING

``INSERT OR IGNORE`` is idempotent too, but it also ignores the CHECK on ``starts_at``, so a
malformed time books nothing without an error the model could correct; ``ON CONFLICT DO
NOTHING`` skips only the duplicate (and is the same in PostgreSQL).
"""

from agent.crm.store import DEFAULT_CRM_URL, Crm, create_crm, crm_path

__all__ = ["DEFAULT_CRM_URL", "Crm", "create_crm", "crm_path"]
