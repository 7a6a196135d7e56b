"""Call records: one row per call and its turns, in SQLite or PostgreSQL, written off the
per-frame path."""
