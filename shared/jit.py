"""numba's njit as the house uses it: machine code cached on disk, no GIL held."""

from __future__ import annotations

import numba


def compiled(fn):
    """numba.njit, with the machine code cached on disk (beside the module, else in the user's
    cache dir) so that a new process loads it (~0.1 s) instead of compiling (~1 s). Where no
    cache dir is writable (read-only install and home), compile once per process instead."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)
