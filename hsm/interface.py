"""The HSM interface the switch calls, and the soft implementation behind it.

``Hsm`` is a Protocol of coroutines so a network HSM (payShield over TCP, say) can
replace :class:`AsyncSoftHsm` without touching the switch. Every call carries
``deadline_s``: an absolute time on the :func:`time.monotonic` clock, in seconds, by
which the caller needs the answer (pass ``time.monotonic() + timeout_s``). A call
whose deadline has passed does no work: verification calls return
``HsmResult.DEADLINE_EXCEEDED``, generation calls raise ``DeadlineExceeded``.

The soft implementation runs the crypto inline: one verification costs tens of
microseconds, less than handing it to a thread would. This module does not import
asyncio: ``async def`` alone is all the Protocol needs.
"""

from __future__ import annotations

import time
from typing import Protocol

from hsm.errors import DeadlineExceeded
from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey, WrappedKey
from hsm.mac import MacAlgorithm
from hsm.results import HsmResult
from hsm.soft import GeneratedKey, PinVerification, SoftHsm


class Hsm(Protocol):
    async def verify_pin(self, req: PinVerification, *, deadline_s: float) -> HsmResult: ...

    async def generate_key(
        self,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        kek: WrappedKey | None,
        *,
        deadline_s: float,
    ) -> GeneratedKey: ...

    async def generate_mac(
        self, key: WrappedKey, data: bytes, algorithm: MacAlgorithm, *, deadline_s: float
    ) -> bytes: ...

    async def verify_mac(
        self,
        key: WrappedKey,
        data: bytes,
        mac: bytes,
        algorithm: MacAlgorithm,
        *,
        deadline_s: float,
    ) -> HsmResult: ...


def _expired(deadline_s: float) -> bool:
    return time.monotonic() >= deadline_s


class AsyncSoftHsm:
    """:class:`Hsm` over a :class:`SoftHsm` (given, or built from a master key).

    ``soft`` is the synchronous HSM for provisioning calls (import, offsets, PVVs).
    """

    def __init__(self, soft_or_master: SoftHsm | MasterKey) -> None:
        self.soft = (
            soft_or_master if isinstance(soft_or_master, SoftHsm) else SoftHsm(soft_or_master)
        )

    def __repr__(self) -> str:
        return f"AsyncSoftHsm({self.soft!r})"

    async def verify_pin(self, req: PinVerification, *, deadline_s: float) -> HsmResult:
        if _expired(deadline_s):
            return HsmResult.DEADLINE_EXCEEDED
        return self.soft.verify_pin(req)

    async def generate_key(
        self,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        kek: WrappedKey | None,
        *,
        deadline_s: float,
    ) -> GeneratedKey:
        """Raises DeadlineExceeded and the errors of :meth:`SoftHsm.generate_key`."""
        if _expired(deadline_s):
            raise DeadlineExceeded("deadline passed before key generation")
        return self.soft.generate_key(usage, algorithm, kek)

    async def generate_mac(
        self, key: WrappedKey, data: bytes, algorithm: MacAlgorithm, *, deadline_s: float
    ) -> bytes:
        """Raises DeadlineExceeded and the errors of :meth:`SoftHsm.generate_mac`."""
        if _expired(deadline_s):
            raise DeadlineExceeded("deadline passed before MAC generation")
        return self.soft.generate_mac(key, data, algorithm)

    async def verify_mac(
        self,
        key: WrappedKey,
        data: bytes,
        mac: bytes,
        algorithm: MacAlgorithm,
        *,
        deadline_s: float,
    ) -> HsmResult:
        if _expired(deadline_s):
            return HsmResult.DEADLINE_EXCEEDED
        return self.soft.verify_mac(key, data, mac, algorithm)
