"""``python -m agent``: the same command as ``agent``."""

from agent.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
