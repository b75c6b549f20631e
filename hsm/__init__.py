"""Soft-HSM: key hierarchy, ISO 9564 PIN blocks, PIN verification, MAC. Pure: no I/O.

Exceptions: everything raised on purpose derives from :class:`hsm.errors.HsmError`.
"""
