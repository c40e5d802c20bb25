"""Gene chunks on threads: compiled kernels that release the GIL, and the pool that runs the chunks.

Once the shared hyperparameters are fixed, the MAP path's work is per gene, and
nearly all of it is numpy on whole (genes x ...) arrays or compiled kernels,
both of which run without the GIL. So contiguous gene chunks run on threads
(one per core by default), each on views of the same arrays: nothing is
copied or pickled. A gene's computation is its own, so the answers do not
depend on the chunking beyond rounding: matrix products over chunks of
another size may round their last bit differently, which the
hyperparameters' optimizer carries to ~1e-6.

pytensor's numba functions hold the GIL and are not re-entrant (a
``pytensor.function`` call writes its inputs into shared storage), so
:func:`compile_kernel` compiles with ``nogil`` and calls the jitted core
directly.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import types
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

#: Work arrays smaller than this (genes x values per gene) do not repay a thread: the
#: whole-array numpy calls get too short, and threads wait on each other for the interpreter.
#: 4,000 genes at 12 samples (the MAP path's 2,000-gene hyperparameter sweeps ran 10% faster
#: on one thread than in two 1,000-gene chunks); 24 genes at 2,000 cells.
MIN_CHUNK = 48_000
#: Gene chunks per thread, handed out as threads come free: genes differ in cost (Newton
#: iterations, safeguarded steps), and one chunk per thread left one waiting for the other.
CHUNKS_PER_THREAD = 2
_COMPILE_LOCK = threading.RLock()
_LOCAL = threading.local()
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_MODE = None
_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("bayescount_threads", default=None)


@contextlib.contextmanager
def threads_limit(n_threads: int):
    """Within the block, :func:`default_threads` is ``n_threads`` (e.g. on a Dask worker that has one core)."""
    token = _LIMIT.set(resolve_threads(n_threads))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def default_threads() -> int:
    """Threads for the MAP path: ``BAYESCOUNT_THREADS`` if set, else the CPUs this process may use.

    Inside :func:`threads_limit`, its value.

    Examples
    --------
    >>> default_threads() >= 1
    True
    """
    if _LIMIT.get() is not None:
        return _LIMIT.get()
    env = os.environ.get("BAYESCOUNT_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise InputError(f"BAYESCOUNT_THREADS={env!r} is not a positive integer; set it to e.g. 2, or unset it")
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_threads(n_threads: int | None) -> int:
    """``n_threads``, or :func:`default_threads` for None; a clear error for anything but a positive integer."""
    if n_threads is None:
        return default_threads()
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1:
        raise InputError(f"n_threads (--threads) must be a positive integer, got {n_threads!r}; "
                         "give e.g. 2, or leave it out to use every CPU")
    return int(n_threads)


def gene_blocks(n_genes: int, size: int) -> list[slice]:
    """Consecutive gene ranges of ``size`` genes (the last may be shorter).

    Work that draws random numbers goes by these blocks, each with its own
    stream, so the numbers do not depend on the threads.
    """
    return [slice(a, min(a + size, n_genes)) for a in range(0, n_genes, size)]


def gene_chunks(n_genes: int, n_threads: int, per_gene: int = 1, min_chunk: int | None = None) -> list[slice]:
    """Contiguous, nearly equal gene ranges, :data:`CHUNKS_PER_THREAD` per thread, none with under ``min_chunk`` values.

    ``per_gene``: values per gene in the work arrays (observations for the
    likelihood kernels); ``min_chunk`` defaults to :data:`MIN_CHUNK`. With one
    thread, one range.

    Examples
    --------
    >>> gene_chunks(20000, 2, per_gene=12)
    [slice(0, 5000, None), slice(5000, 10000, None), slice(10000, 15000, None), slice(15000, 20000, None)]
    >>> gene_chunks(10000, 2, per_gene=12)
    [slice(0, 5000, None), slice(5000, 10000, None)]
    """
    if n_threads <= 1:
        return [slice(0, n_genes)]
    least = -(-(MIN_CHUNK if min_chunk is None else min_chunk) // max(int(per_gene), 1))
    k = int(max(1, min(CHUNKS_PER_THREAD * n_threads, n_genes // max(least, 1))))
    edges = np.linspace(0, n_genes, k + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def run_chunks(fn, items, n_threads: int) -> list:
    """``[fn(x) for x in items]``, on up to ``n_threads`` threads (the caller's among them).

    Each thread takes the next item when it is free (genes differ in cost, so
    fixed shares leave a thread waiting). Called from inside a chunk it runs
    in line, so chunks never wait on each other.
    """
    items = list(items)
    k = min(n_threads, len(items))
    if k <= 1 or getattr(_LOCAL, "in_chunk", False):
        return [fn(x) for x in items]
    results: list = [None] * len(items)
    queue = iter(range(len(items)))
    lock = threading.Lock()

    def worker():
        _LOCAL.in_chunk = True
        try:
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                results[i] = fn(items[i])
        finally:
            _LOCAL.in_chunk = False

    pool = _pool(k - 1)
    futures = [pool.submit(worker) for _ in range(k - 1)]
    try:
        worker()
    except BaseException:
        with lock:  # stop handing out items
            for _ in queue:
                pass
        raise
    finally:
        # No chunk may still be writing when the caller moves on (or unwinds).
        wait(futures)
    for f in futures:
        f.result()  # a worker's exception
    return results


def map_rows(fn, arrays, n_threads: int) -> np.ndarray:
    """``fn(*arrays)`` for per-gene work, computed on gene chunks on threads and joined.

    ``arrays`` share their first axis (genes); ``fn`` must treat every gene
    on its own and return an array over the same genes.
    """
    chunks = gene_chunks(arrays[0].shape[0], n_threads, max(int(np.prod(a.shape[1:])) for a in arrays))
    if len(chunks) == 1:
        return fn(*arrays)
    return np.concatenate(run_chunks(lambda sl: fn(*(a[sl] for a in arrays)), chunks, n_threads))


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _COMPILE_LOCK:
        if _POOL is None or _POOL_SIZE < size:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=size, thread_name_prefix="bayescount"), size
        return _POOL


class Kernel:
    """A compiled pytensor function called through its jitted core: re-entrant, and without the GIL.

    Where the jitted core is not reachable (another linker), calls go through
    the ``pytensor.function`` under a lock, which is safe but serial.
    """

    def __init__(self, fn, single: bool):
        self.fn = fn
        self.single = single
        self.jit = getattr(getattr(fn, "vm", None), "jit_fn", None)
        self._lock = threading.Lock()

    @property
    def releases_gil(self) -> bool:
        return self.jit is not None and bool(getattr(self.jit, "targetoptions", {}).get("nogil"))

    def __call__(self, *args):
        if self.jit is None:
            with self._lock:
                return self.fn(*args)
        out = self.jit(*args)
        return out[0] if self.single else list(out)


def compile_kernel(inputs, outputs, **kwargs) -> Kernel:
    """``pytensor.function(inputs, outputs)`` in numba mode, as a :class:`Kernel` safe to call from threads."""
    import pytensor

    with _COMPILE_LOCK:
        fn = pytensor.function(inputs, outputs, mode=_nogil_mode(), **kwargs)
    return Kernel(fn, single=not isinstance(outputs, (list, tuple)))


def _nogil_mode():
    global _MODE
    with _COMPILE_LOCK:
        if _MODE is None:
            from pytensor.compile.mode import Mode, get_mode

            try:
                from pytensor.link.numba.linker import NumbaLinker
            except ImportError:  # pragma: no cover - a pytensor without the numba backend
                _MODE = get_mode("NUMBA")
                return _MODE

            class _NogilNumbaLinker(NumbaLinker):
                def jit_compile(self, fn_and_cache):
                    from pytensor.link.numba.dispatch.basic import numba_njit

                    fn, key = fn_and_cache
                    return numba_njit(_own_cache_entry(fn.py_func, key), final_function=True,
                                      cache=key is not None, nogil=True)

            _MODE = Mode(linker=_NogilNumbaLinker(), optimizer=get_mode("NUMBA").optimizer)
        return _MODE


def _own_cache_entry(py_func, key):
    """A copy of ``py_func`` with an on-disk cache entry of its own.

    numba's cache index does not record ``nogil``, so under pytensor's key the
    default linker's entry (which holds the GIL) would be loaded for ours, or ours for it.
    """
    if key is None:
        return py_func
    try:
        from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS
    except ImportError:  # pragma: no cover - an older pytensor: no shared cache to collide with
        return py_func
    own = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__, py_func.__defaults__,
                             py_func.__closure__)
    own.__qualname__ = py_func.__qualname__
    CACHED_SRC_FUNCTIONS[own] = f"{CACHED_SRC_FUNCTIONS.get(py_func, key)}_nogil"
    return own


__all__ = ["default_threads", "resolve_threads", "threads_limit", "gene_blocks", "gene_chunks", "run_chunks",
           "map_rows", "compile_kernel", "Kernel", "MIN_CHUNK", "CHUNKS_PER_THREAD"]
