"""``attnlab heads``: command line (being written)."""
