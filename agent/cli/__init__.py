"""The ``agent`` command: serve, emulate, call, check, schema, calls, bench."""
