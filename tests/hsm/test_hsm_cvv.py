"""CVV / iCVV / CVV2 with a CVK: published vectors, psec, verification."""

from __future__ import annotations

import psec
import pytest
from hsm_testkeys import PSEC, TDES_KEY_HEX
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm import cvv
from hsm.errors import HsmError
from hsm.keys import KeyAlgorithm, KeyUsage, WrappedKey
from hsm.results import HsmResult
from hsm.soft import SoftHsm


@pytest.fixture(scope="module")
def cvk(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.CVK, KeyAlgorithm.TDES2, TDES_KEY_HEX)


def test_cvv_published_example() -> None:
    # Worked CVN example (topic.alibabacloud.com "algorithm generation 7: CVN"):
    # key A 0123456789ABCDEF, key B FEDCBA9876543210, PAN 4123456789012345,
    # expiry 8701, service code 111 -> intermediate 8D5625FA78011A0C -> CVN 856.
    assert cvv.cvv(bytes.fromhex(TDES_KEY_HEX), "4123456789012345", "8701", "111") == "856"


def test_cvv_psec_doc_example(hsm: SoftHsm, cvk: WrappedKey) -> None:
    # psec 1.3.0 documentation of generate_cvv: PAN 1234567890123456, 9912, 220 -> 170.
    assert hsm.generate_cvv(cvk, "1234567890123456", "9912", "220") == "170"


@PSEC
@settings(max_examples=40)
@given(pan=st.text(alphabet="0123456789", min_size=12, max_size=19),
       expiry=st.text(alphabet="0123456789", min_size=4, max_size=4),
       service=st.text(alphabet="0123456789", min_size=3, max_size=3))
def test_cvv_agrees_with_psec(hsm: SoftHsm, cvk: WrappedKey, pan: str, expiry: str,
                              service: str) -> None:
    theirs = psec.cvv.generate_cvv(bytes.fromhex(TDES_KEY_HEX), pan, expiry, service)
    assert hsm.generate_cvv(cvk, pan, expiry, service) == theirs


def test_verify_cvv_and_icvv(hsm: SoftHsm, cvk: WrappedKey) -> None:
    pan, expiry = "4123456789012345", "8701"
    value = hsm.generate_cvv(cvk, pan, expiry, "111")
    assert hsm.verify_cvv(cvk, pan, expiry, "111", value) is HsmResult.OK
    wrong = f"{(int(value) + 1) % 1000:03d}"
    assert hsm.verify_cvv(cvk, pan, expiry, "111", wrong) is HsmResult.VERIFICATION_FAILED
    icvv = hsm.generate_cvv(cvk, pan, expiry, cvv.ICVV_SERVICE_CODE)
    assert hsm.verify_cvv(cvk, pan, expiry, "999", icvv) is HsmResult.OK
    assert hsm.verify_cvv(cvk, pan, expiry, "111", "12") is HsmResult.INVALID_INPUT
    assert hsm.verify_cvv(cvk, pan, "87", "111", value) is HsmResult.INVALID_INPUT
    assert hsm.verify_cvv(cvk, "41234", expiry, "111", value) is HsmResult.INVALID_INPUT


def test_cvk_must_be_double_length(hsm: SoftHsm) -> None:
    aes = hsm.import_clear_key(KeyUsage.CVK, KeyAlgorithm.AES128, TDES_KEY_HEX)
    with pytest.raises(HsmError) as info:
        hsm.generate_cvv(aes, "4123456789012345", "8701", "111")
    assert info.value.result is HsmResult.KEY_LENGTH
