"""The I/O shell: TCP server, sessions, authorization pipeline, metrics, CLI."""

# Before any of its modules is imported: decides whether the compiled modules or
# their sources are loaded (see messages.compiled).
from messages.compiled import guard as _guard

_guard(__name__, __file__)
