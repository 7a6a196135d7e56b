"""``python -m agent.bench``: the same as ``agent bench``."""

from agent.bench.run import main

if __name__ == "__main__":
    raise SystemExit(main())
