"""The body buffer that is not zeroed first: a bytearray of the size asked, whatever it held."""

from __future__ import annotations

import ctypes

import pytest

from gateway.backends.buffers import body_buffer


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 1024 * 1024 + 17])
def test_a_buffer_is_a_bytearray_of_the_size_asked_and_writable(size: int) -> None:
    buffer = body_buffer(size)

    assert type(buffer) is bytearray
    assert len(buffer) == size
    buffer[:] = b"\x5a" * size
    assert buffer == b"\x5a" * size


@pytest.mark.parametrize("size", [-1, 2**63, 2**64 + 5])
def test_a_size_that_is_not_one_is_refused(size: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        body_buffer(size)


def test_other_users_of_the_c_api_do_not_change_it() -> None:
    shared = ctypes.pythonapi.PyByteArray_FromStringAndSize
    saved = shared.restype, shared.argtypes
    shared.restype, shared.argtypes = ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_long)
    try:
        assert len(body_buffer(10)) == 10
    finally:
        shared.restype, shared.argtypes = saved
