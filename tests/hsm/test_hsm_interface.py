"""The async interface: AsyncSoftHsm satisfies Hsm and honours deadlines."""

from __future__ import annotations

import time

import pytest
from hsm_testkeys import TDES_KEY_HEX

from hsm.errors import DeadlineExceeded
from hsm.interface import AsyncSoftHsm, Hsm
from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey, WrappedKey
from hsm.mac import MacAlgorithm
from hsm.results import HsmResult, counts_as_pin_try, response_code_for
from hsm.soft import PinVerification, SoftHsm
from hsm.terminal import encrypt_pin_block

PAN = "4000001234562"


def _as_hsm(hsm: Hsm) -> Hsm:
    return hsm  # mypy checks AsyncSoftHsm against the Protocol here


async def test_verify_pin_before_and_after_deadline(
    hsm: SoftHsm, tpk: WrappedKey, pvk: WrappedKey
) -> None:
    remote = _as_hsm(AsyncSoftHsm(hsm))
    pvv = hsm.generate_pvv(pvk, PAN, "1", "1234")
    block = encrypt_pin_block(TDES_KEY_HEX, "1234", PAN)
    req = PinVerification(block, PAN, 0, tpk, "pvv", pvk, pvki="1", pvv=pvv)
    assert await remote.verify_pin(req, deadline_s=time.monotonic() + 1) is HsmResult.OK
    late = await remote.verify_pin(req, deadline_s=time.monotonic() - 0.001)
    assert late is HsmResult.DEADLINE_EXCEEDED
    assert response_code_for(late) == "96"


async def test_generate_key_and_mac_through_the_interface(master: MasterKey) -> None:
    remote = AsyncSoftHsm(master)
    tmk = remote.soft.import_clear_key(KeyUsage.TMK, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    deadline = time.monotonic() + 1
    tak = await remote.generate_key(KeyUsage.TAK, KeyAlgorithm.TDES2, tmk, deadline_s=deadline)
    assert tak.under_kek_hex is not None
    mac = await remote.generate_mac(tak.wrapped, b"0200", MacAlgorithm.ISO9797_1_ALG3_PAD1,
                                    deadline_s=deadline)
    assert len(mac) == 8
    ok = await remote.verify_mac(tak.wrapped, b"0200", mac, MacAlgorithm.ISO9797_1_ALG3_PAD1,
                                 deadline_s=deadline)
    assert ok is HsmResult.OK
    past = time.monotonic() - 1
    with pytest.raises(DeadlineExceeded) as info:
        await remote.generate_key(KeyUsage.TAK, KeyAlgorithm.TDES2, tmk, deadline_s=past)
    assert info.value.result is HsmResult.DEADLINE_EXCEEDED
    with pytest.raises(DeadlineExceeded):
        await remote.generate_mac(tak.wrapped, b"", MacAlgorithm.CMAC, deadline_s=past)
    late = await remote.verify_mac(tak.wrapped, b"0200", mac, MacAlgorithm.ISO9797_1_ALG3_PAD1,
                                   deadline_s=past)
    assert late is HsmResult.DEADLINE_EXCEEDED


def test_field39_mapping_is_total() -> None:
    assert response_code_for(HsmResult.OK) == "00"
    assert response_code_for(HsmResult.VERIFICATION_FAILED) == "55"
    assert response_code_for(HsmResult.PIN_BLOCK_ERROR) == "55"
    assert response_code_for(HsmResult.PIN_LENGTH) == "55"
    for result in HsmResult:
        assert response_code_for(result) in {"00", "55", "96"}
        assert result.meaning
    for fault in (HsmResult.KEY_USAGE, HsmResult.MASTER_KEY_ERROR, HsmResult.KEY_PARITY,
                  HsmResult.INTERNAL_ERROR, HsmResult.DEADLINE_EXCEEDED):
        assert response_code_for(fault) == "96"
        assert not counts_as_pin_try(fault, count_format_errors=True)
    assert counts_as_pin_try(HsmResult.VERIFICATION_FAILED, count_format_errors=False)
    assert counts_as_pin_try(HsmResult.PIN_BLOCK_ERROR, count_format_errors=True)
    assert not counts_as_pin_try(HsmResult.PIN_BLOCK_ERROR, count_format_errors=False)


def test_repr_of_hsm_objects_hides_keys(master: MasterKey) -> None:
    remote = AsyncSoftHsm(master)
    assert "kcv=" in repr(remote)
