"""ISO 8583:1987 messages for an ATM authorization host. Pure: no I/O.

Exceptions: everything raised on purpose derives from
:class:`messages.errors.MessageError`.
"""
