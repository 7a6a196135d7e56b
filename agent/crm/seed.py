"""The demo CRM's schema and seed data.

The schema is a contract: example agents' ``sql`` tools are written against these table and
column names, so they do not change. Dates in the seed are relative to the day the database is
created, so an order "shipped, arriving in two days" stays plausible whenever a developer starts.

The numbers are all from ranges reserved for fiction (555-0100 to 555-0199 in North America,
Ofcom's 07700 900xxx, ACMA's 0491 570 xxx, ARCEP's 06 39 98 xx xx), and the e-mail domains are
the IANA example domains. ``+15555550100`` is the carrier simulator's default caller: a gold
customer with an order delivered, one shipped and one still processing, and an appointment.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

SCHEMA_VERSION: Final = 1

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS customers (
        id     INTEGER PRIMARY KEY,
        name   TEXT NOT NULL,
        phone  TEXT NOT NULL UNIQUE CHECK (phone GLOB '+[1-9]*'),  -- E.164
        email  TEXT,
        tier   TEXT NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'gold', 'platinum'))
    )""",
    """CREATE TABLE IF NOT EXISTS orders (
        id           TEXT PRIMARY KEY,                 -- 'A1017'
        customer_id  INTEGER NOT NULL REFERENCES customers (id),
        status       TEXT NOT NULL
                     CHECK (status IN ('processing', 'shipped', 'delivered', 'cancelled',
                                       'returned')),
        eta          TEXT,                             -- ISO date: expected or actual delivery
        total        REAL NOT NULL,                    -- US dollars
        items        TEXT NOT NULL                     -- as a person would say it
    )""",
    "CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id)",
    """CREATE TABLE IF NOT EXISTS appointments (
        id               INTEGER PRIMARY KEY,
        customer_id      INTEGER NOT NULL REFERENCES customers (id),
        starts_at        TEXT NOT NULL                 -- local time, 'YYYY-MM-DDTHH:MM'
                         CONSTRAINT starts_at_is_iso_local_time CHECK (starts_at GLOB
                             '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'
                             || '[T ][0-2][0-9]:[0-5][0-9]*'),
        topic            TEXT NOT NULL,
        created_by_call  TEXT,                         -- CallSid that booked it (NULL: seed)
        -- A model may repeat a function call (a retry, a reconnection): booking the same slot
        -- twice in one call is one booking. ON CONFLICT DO NOTHING relies on this.
        UNIQUE (created_by_call, starts_at)
    )""",
    "CREATE INDEX IF NOT EXISTS appointments_by_customer ON appointments (customer_id, starts_at)",
    """CREATE TABLE IF NOT EXISTS tickets (
        id               INTEGER PRIMARY KEY,
        customer_id      INTEGER REFERENCES customers (id),  -- NULL: an unknown caller
        subject          TEXT NOT NULL,
        body             TEXT NOT NULL DEFAULT '',
        created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
        created_by_call  TEXT
    )""",
)

# (id, name, phone, email, tier)
CUSTOMERS: Final = (
    (1, "Dana Whitfield", "+15555550100", "dana.whitfield@example.com", "gold"),
    (2, "Marcus Oyelaran", "+15555550101", "marcus.oyelaran@example.net", "standard"),
    (3, "Priya Raghunathan", "+15555550102", "priya.r@example.com", "platinum"),
    (4, "Tomás Esquivel", "+15555550103", "tomas.esquivel@example.org", "standard"),
    (5, "Helen Kowalczyk", "+15555550104", "h.kowalczyk@example.com", "gold"),
    (6, "Jamal Reyes-Whitaker", "+15555550105", "jamal.rw@example.net", "standard"),
    (7, "Ingrid Solberg", "+15555550106", "ingrid.solberg@example.com", "standard"),
    (8, "Kenji Watanabe", "+15555550107", "kenji.watanabe@example.org", "gold"),
    (9, "Aoife Brennan", "+447700900123", "aoife.brennan@example.co.uk", "standard"),
    (10, "Samuel Adeyemi", "+15555550108", "sam.adeyemi@example.com", "platinum"),
    (11, "Liam O'Connor", "+61491570156", "liam.oconnor@example.com.au", "standard"),
    (12, "Chloé Lambert", "+33639980042", None, "standard"),
)

# (id, customer_id, status, eta in days from today or None, total, items)
ORDERS: Final = (
    ("A1003", 2, "delivered", -30, 89.90, "a camping stove and a fuel canister"),
    ("A1006", 4, "cancelled", None, 74.95, "a climbing harness, size large"),
    ("A1007", 11, "delivered", -25, 89.00, "a fleece jacket, size large"),
    ("A1008", 7, "delivered", -20, 39.99, "a cross-country ski wax kit"),
    ("A1009", 1, "delivered", -12, 34.50, "an insulated water bottle, 750 millilitres"),
    ("A1010", 8, "delivered", -10, 49.95, "a water filter"),
    ("A1011", 3, "delivered", -8, 149.00, "carbon trekking poles"),
    ("A1012", 5, "delivered", -6, 119.00, "a wool base layer set"),
    ("A1013", 10, "delivered", -5, 399.00, "a GPS watch"),
    ("A1014", 3, "returned", -15, 45.00, "a 400-lumen headlamp"),
    ("A1015", 9, "shipped", 4, 95.00, "rain trousers, size small"),
    ("A1016", 6, "shipped", 2, 58.40, "a bike repair kit and two inner tubes"),
    (
        "A1017",
        1,
        "shipped",
        2,
        154.97,
        "trail running shoes, women's size 8, and two pairs of merino socks",
    ),
    ("A1018", 8, "processing", 7, 265.00, "an ultralight 45-litre backpack"),
    ("A1019", 2, "shipped", 1, 329.00, "a two-person tent"),
    ("A1020", 3, "processing", 5, 389.00, "a long down sleeping bag"),
    ("A1021", 1, "processing", 6, 219.00, "a waterproof shell jacket, size medium"),
    ("A1022", 5, "shipped", 3, 210.00, "hiking boots, women's size 7.5"),
    ("A1023", 10, "processing", 9, 189.50, "a trail camera bundle"),
)

# (customer_id, days from today, "HH:MM", topic)
APPOINTMENTS: Final = (
    (1, 3, "10:30", "fitting for the waterproof shell jacket at the downtown store"),
    (3, 1, "15:00", "sleeping bag consultation"),
    (5, -2, "09:00", "boot fitting"),
    (10, 7, "11:15", "GPS watch set-up session"),
)

# (customer_id, days from today, subject, body)
TICKETS: Final = (
    (
        2,
        -1,
        "Stove igniter stopped sparking",
        "The igniter of the camping stove from order A1003 stopped sparking after two trips.",
    ),
    (7, -18, "Ski wax temperatures", "Asked which wax suits temperatures around -10 °C."),
)


def seed_rows(
    today: dt.date,
) -> dict[str, list[tuple[object, ...]]]:
    """Every seed row, with relative dates resolved against ``today``."""

    def day(offset: int) -> str:
        return (today + dt.timedelta(days=offset)).isoformat()

    return {
        "customers": [tuple(row) for row in CUSTOMERS],
        "orders": [
            (order_id, customer, status, None if eta is None else day(eta), total, items)
            for order_id, customer, status, eta, total, items in ORDERS
        ],
        "appointments": [
            (customer, f"{day(offset)}T{at}", topic, None)
            for customer, offset, at, topic in APPOINTMENTS
        ],
        "tickets": [
            (customer, subject, body, f"{day(offset)}T09:00:00Z", None)
            for customer, offset, subject, body in TICKETS
        ],
    }


INSERTS: Final = {
    "customers": "INSERT INTO customers (id, name, phone, email, tier) VALUES (?, ?, ?, ?, ?)",
    "orders": "INSERT INTO orders (id, customer_id, status, eta, total, items) "
    "VALUES (?, ?, ?, ?, ?, ?)",
    "appointments": "INSERT INTO appointments (customer_id, starts_at, topic, created_by_call) "
    "VALUES (?, ?, ?, ?)",
    "tickets": "INSERT INTO tickets (customer_id, subject, body, created_at, created_by_call) "
    "VALUES (?, ?, ?, ?, ?)",
}
