"""Soft-HSM: key hierarchy, ISO 9564 PIN blocks, PIN verification, MAC. Pure: no I/O.

Modules: ``keys`` (master key, wrapped working keys), ``soft`` (the synchronous HSM),
``interface`` (the async ``Hsm`` protocol the switch calls), ``terminal`` (the ATM side),
``results`` (payShield-style result codes and their field 39 mapping), ``errors``.
``pinblock``, ``pinverify``, ``dukpt``, ``mac`` and ``cvv`` hold the algorithms; only
``soft`` feeds them clear keys.

Exceptions: everything raised on purpose derives from :class:`hsm.errors.HsmError`,
which carries an :class:`hsm.results.HsmResult`. Verification calls return a result
instead of raising.
"""
