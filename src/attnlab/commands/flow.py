"""``attnlab flow``: command line (being written)."""
