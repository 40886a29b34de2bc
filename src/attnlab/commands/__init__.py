"""Command-line commands kept in modules of their own; each registers itself on :data:`attnlab.cli.app`."""
