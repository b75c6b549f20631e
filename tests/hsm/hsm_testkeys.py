"""Published test keys shared by the hsm tests (never production material), and the
warning filter for tests that call psec."""

from __future__ import annotations

import pytest

# The double-length key of countless published examples (psec docs, X9.24 BDK).
TDES_KEY_HEX = "0123456789ABCDEFFEDCBA9876543210"
AES_KEY_HEX = "2B7E151628AED2A6ABF7158809CF4F3C"  # NIST SP 800-38B example key

# psec 1.3.0 reaches TripleDES through its deprecated location in cryptography and
# passes 16-byte keys: both warn. The filter is scoped to tests that call psec; every
# other test runs our code with warnings as errors, so none of ours can hide here.
PSEC = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
