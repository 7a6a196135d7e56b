"""``agent bench``: the timing and CPU targets, measured and reported."""
