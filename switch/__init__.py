"""The I/O shell: TCP server, sessions, authorization pipeline, metrics, CLI."""
