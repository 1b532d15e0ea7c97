"""The malloc setting takes on this platform (Linux/glibc, as CI and production run)."""

import sys

import pytest

from calltexts_assets.audio.memory import return_large_buffers_to_os


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")
def test_large_buffers_are_returned_to_the_os_on_linux() -> None:
    assert return_large_buffers_to_os() is True
