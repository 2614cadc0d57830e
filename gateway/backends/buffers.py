"""A buffer for a response body whose size is known before it arrives.

``bytearray(n)`` writes ``n`` zero bytes before the socket writes the body over them.
For an image answer that first pass is most of what reading it costs: the zeroing is
what first touches pages the heap has not handed out before, and in a ``perf`` profile
of the image benchmark with stored links (``n = 4``, 5.6 MB answers) it took 99.8% of
the gateway's page faults, the kernel clearing those pages a third of its CPU time.
:func:`body_buffer` asks CPython for a ``bytearray`` it does not fill
(``PyByteArray_FromStringAndSize`` with no source, which CPython's source leaves unset,
as the documentation says of its ``bytes`` counterpart): the socket's copy is the only
write. G at ``n = 4``, two runs each, alternated in one session: 83 and 70 answers/s
before, 90 and 87 after, with a peak RSS of 1.5 GiB instead of 1.7-1.8 (BENCHMARKS.md,
"Image relay").

Its bytes are whatever the heap held until the body overwrites them, so the buffer is
handed on only once it is filled: the HTTP client delivers a body only when all of its
``Content-Length`` has arrived, and fails the call otherwise
(``tests/backends/test_h1_bodies.py`` checks both).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["body_buffer"]


def _unfilled() -> Callable[[int], bytearray] | None:
    if sys.implementation.name != "cpython":  # pragma: no cover - CPython's API only
        return None
    try:
        import ctypes
    except ImportError:  # pragma: no cover - a CPython built without ctypes
        return None
    # A prototype of our own: ``ctypes.pythonapi.<name>`` is shared by the whole process,
    # and another library may set its argument and result types differently.
    prototype = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_char_p, ctypes.c_ssize_t)
    make = prototype(("PyByteArray_FromStringAndSize", ctypes.pythonapi))

    def body_buffer(size: int) -> bytearray:
        if not 0 <= size <= sys.maxsize:  # c_ssize_t would wrap: refused as bytearray does
            raise ValueError(f"a buffer of {size} bytes")
        buffer: bytearray = make(None, size)
        return buffer

    return body_buffer


body_buffer: Callable[[int], bytearray] = _unfilled() or bytearray
