"""Shared fixtures for the soft-HSM tests: a demo master key and a few wrapped keys.

Clear keys are published test keys (hsm_testkeys.py), never production material.
tests/hsm has no __init__.py on purpose: it would make this directory a package
named ``hsm`` and shadow the real one; test modules carry an ``hsm`` prefix instead.
"""

from __future__ import annotations

import pytest
from hsm_testkeys import AES_KEY_HEX, TDES_KEY_HEX

from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey, WrappedKey
from hsm.soft import SoftHsm


@pytest.fixture(scope="session")
def master() -> MasterKey:
    return MasterKey.demo()


@pytest.fixture(scope="session")
def hsm(master: MasterKey) -> SoftHsm:
    return SoftHsm(master)


@pytest.fixture(scope="session")
def tpk(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.TPK, KeyAlgorithm.TDES2, TDES_KEY_HEX)


@pytest.fixture(scope="session")
def tpk_aes(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.TPK, KeyAlgorithm.AES128, AES_KEY_HEX)


@pytest.fixture(scope="session")
def pvk(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.PVK, KeyAlgorithm.TDES2, TDES_KEY_HEX)
