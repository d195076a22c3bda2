"""Start-up under a memory cap: size allocators and thread pools to the limit.

Under ``ulimit -v`` (RLIMIT_AS) every thread's stack reservation, every glibc malloc arena
(64 MiB of address space each) and jemalloc's large reservations count against the cap:
with the defaults a 2M-row CSV hung in pyarrow's reader at 600 MB, aborted at 590 MB and a
Parquet run died with exit 127 ("cannot allocate memory for thread-local data"). So, when
a cap is found (RLIMIT_AS, or a cgroup's memory.max / memory.limit_in_bytes) and it is
small, before NumPy and pyarrow are imported:

* pyarrow allocates with the system allocator (``ARROW_DEFAULT_MEMORY_POOL=system``);
* glibc keeps few malloc arenas (``mallopt(M_ARENA_MAX)``);
* OpenBLAS / OpenMP / MKL use one thread;
* pyarrow's CPU and I/O thread pools get one thread per ``_PER_THREAD`` bytes of the cap.

A setting the user made in the environment is kept. Without a cap (or with a large one)
nothing is changed: start-up costs a getrlimit and two small reads, and imports nothing.
An allocation that still fails is reported at the CLI boundary as a memory error (exit 1).
"""

from __future__ import annotations

import os
import sys

CAPPED_BELOW = 4 << 30  # a cap below this sizes the pools; above it the defaults are fine
_PER_THREAD = 256 << 20  # address space allowed per pyarrow thread
_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")

applied: int | None = None  # the cap the pools were sized for, once configured


def memory_limit() -> int | None:
    """The smallest of RLIMIT_AS and the cgroup memory limit, in bytes (None: unlimited)."""
    limits = []
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(int(soft))
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        pass
    for path in _CGROUP_FILES:
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):  # v1 says "no limit" with a huge number
            limits.append(int(text))
    return min(limits) if limits else None


def configure(limit: int | None = None) -> int | None:
    """Size allocators and pools to a small memory cap; returns the cap acted on (or None).
    Call before NumPy and pyarrow are imported (a later call still sizes pyarrow's pools)."""
    global applied
    limit = memory_limit() if limit is None else limit
    if limit is None or limit >= CAPPED_BELOW:
        return None
    env = os.environ
    threads = max(1, min(os.cpu_count() or 1, limit // _PER_THREAD))
    env.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    # Arrow sizes its CPU pool from OMP_NUM_THREADS and its I/O pool from ARROW_IO_THREADS when
    # pyarrow is imported; OpenBLAS and MKL read their own variables first.
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("ARROW_IO_THREADS", str(max(2, threads)))
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    if "MALLOC_ARENA_MAX" not in env:
        _set_arena_max(1 if limit < (1 << 30) else 2)
    if "pyarrow" in sys.modules:  # imported already (lossctl used as a library): resize its pools
        pa = sys.modules["pyarrow"]
        pa.set_cpu_count(min(pa.cpu_count(), threads))
        pa.set_io_thread_count(min(pa.io_thread_count(), max(2, threads)))
    applied = limit
    return limit


def read_block(default: int) -> int:
    """A read buffer (CSV block) size: ``default``, or smaller under a small cap, from the address
    space still free (several blocks are parsed at once, each with buffers a few times its size;
    a failed allocation inside pyarrow's CSV parser aborts the process instead of raising)."""
    if applied is None:
        return default
    free = applied - (_address_space() or 0)
    return int(min(default, max(1 << 16, free // 64)))


def _address_space() -> int | None:
    """This process's mapped address space (VmSize), in bytes; None where /proc is not there."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _set_arena_max(n: int) -> None:
    """glibc's M_ARENA_MAX at run time (the MALLOC_ARENA_MAX variable is read only at exec)."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, n)  # M_ARENA_MAX; the process's own libc
    except (OSError, AttributeError, ImportError, TypeError):  # pragma: no cover - not glibc
        pass


_MEMORY_WORDS = (
    "malloc of size",
    "realloc of size",
    "out of memory",
    "cannot allocate memory",
    "can't start new thread",  # a thread stack is address space too
    "failed to launch worker thread",
)


def is_memory_error(exc: BaseException | None) -> bool:
    """An allocation that failed (MemoryError, pyarrow's ArrowMemoryError, a failed malloc quoted
    by a library, a thread that could not be started), here or in the exception it replaced."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, MemoryError):
            return True
        text = str(exc).lower()
        if any(w in text for w in _MEMORY_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def memory_message(exc: BaseException) -> str:
    """One paragraph for an allocation that failed: where (the file and row lossctl named, when it
    did), the cap in force, and what to try."""
    limit = memory_limit()
    cap = f" under a memory limit of {limit / (1 << 20):.0f} MiB (ulimit -v or the cgroup's limit)" if limit else ""
    where = ""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and ": " in message:
        where = f" while reading {message.split(': ', 1)[0]}"
    return (
        f"out of memory{cap}{where}. Try a smaller --chunk-size, fewer inputs or groups, "
        "or a higher memory limit."
    )
