"""``attnlab lookback``: command line (being written)."""
