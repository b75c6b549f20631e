"""Secrets never show: reprs of keys, HSM objects and requests, and error texts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm._crypto import BlockKey, with_odd_parity
from hsm.errors import HsmError
from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey, check_clear_key
from hsm.soft import PinVerification, SoftHsm
from hsm.terminal import encrypt_pin_block


def _usable(key: bytes) -> bool:
    try:
        check_clear_key(KeyAlgorithm.TDES2, key)
    except HsmError:
        return False  # all zero, or degenerate (weak component, equal halves)
    return True


key_bytes = st.binary(min_size=16, max_size=16).map(with_odd_parity).filter(_usable)


@settings(max_examples=50)
@given(clear=key_bytes, master=st.binary(min_size=32, max_size=32).filter(any))
def test_reprs_never_show_key_material(clear: bytes, master: bytes) -> None:
    master_key = MasterKey(master)
    hsm = SoftHsm(master_key)
    wrapped = hsm.import_clear_key(KeyUsage.TPK, KeyAlgorithm.TDES2, clear.hex())
    generated = hsm.generate_key(KeyUsage.TPK, KeyAlgorithm.TDES2, hsm.import_clear_key(
        KeyUsage.TMK, KeyAlgorithm.TDES2, clear.hex()))
    texts = [repr(master_key), repr(hsm), repr(wrapped), repr(generated),
             repr(BlockKey(clear, is_aes=False)), str(generated)]
    for text in texts:
        upper = text.upper()
        assert clear.hex().upper() not in upper
        assert master.hex().upper() not in upper
        assert wrapped.ciphertext.hex().upper() not in upper
        assert generated.under_kek_hex is not None
        assert generated.under_kek_hex not in upper


def test_pin_request_repr_and_errors(hsm: SoftHsm) -> None:
    tpk = hsm.import_clear_key(KeyUsage.TPK, None, "0123456789ABCDEFFEDCBA9876543210")
    pvk = hsm.import_clear_key(KeyUsage.PVK, None, "0123456789ABCDEFFEDCBA9876543210")
    pan, pin = "4000001234562", "8642"
    block = encrypt_pin_block("0123456789ABCDEFFEDCBA9876543210", pin, pan)
    req = PinVerification(block, pan, 0, tpk, "pvv", pvk, pvki="1", pvv="9753")
    for text in (repr(req), str(req)):
        for secret in (block, pan, "9753"):
            assert secret not in text
    for bad in (pin + "x", "1" * 20, ""):
        with pytest.raises(HsmError) as info:
            encrypt_pin_block("0123456789ABCDEFFEDCBA9876543210", bad, pan)
        if bad:
            assert bad not in str(info.value)
        assert pan not in str(info.value)
    with pytest.raises(HsmError) as info:
        hsm.import_clear_key(KeyUsage.TPK, None, "0023456789ABCDEFFEDCBA9876543210")
    assert "0023456789ABCDEF" not in str(info.value)
