r"""Which fast exact paths this machine has, probed once at run time.

Every deployed computation has a pure-PyTorch path that gives the same
result; the fast paths replace it where they are present. Some are small C
kernels (:mod:`pyg_qgnn.deploy.knn`, :mod:`pyg_qgnn.deploy.binary_edge`,
:mod:`pyg_qgnn.deploy.integer_aggregate`) that the system C compiler
builds on first use, cached under :obj:`$PYG_QGNN_CACHE/native`; without a
compiler the next path is taken.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch


@dataclass(frozen=True)
class Backend:
    r"""The fast paths found, and the one each operation uses.

    Attributes:
        int8_gemm (bool): :func:`torch._int_mm` (:obj:`int8` GEMM with
            :obj:`int32` accumulation) runs on the CPU.
        numpy_popcount (bool): :func:`numpy.bitwise_count` (numpy 2)
            counts the bits of 64-bit words.
        native (bool): The C kernel of :func:`~pyg_qgnn.deploy.hamming_knn`
            (popcounts and a counting selection) was built and loaded.
        faiss (bool): :mod:`faiss` is importable (counting-selection Hamming
            search, :class:`faiss.IndexBinaryFlat`).
        hamming_knn (str): The path :func:`~pyg_qgnn.deploy.hamming_knn`
            takes: :obj:`"native"`, :obj:`"faiss"` or :obj:`"torch"`.
        binary_matmul (str): The path :func:`~pyg_qgnn.deploy.binary_matmul`
            takes: :obj:`"int8"`, :obj:`"popcount"` or :obj:`"torch"`.
        int8_aggregate (str): The path
            :func:`~pyg_qgnn.deploy.integer_aggregate.aggregate_codes`
            takes: :obj:`"native"` (its C kernel, built with OpenMP where
            the compiler has it) or :obj:`"torch"`.
        int8_elementwise (str): The path of the quantize and rescale steps
            of the deployed integer layers
            (:mod:`pyg_qgnn.deploy.integer_elementwise`): :obj:`"native"`
            or :obj:`"torch"`.
        packed_bits (str): The path of the deployed binary GraphSAGE
            layers between binary layers: :obj:`"native"` (the kernels of
            :mod:`pyg_qgnn.deploy.packed_bits` on packed signs) or
            :obj:`"torch"` (:obj:`int8` codes, :func:`binary_matmul`).
        float_aggregate (str): How the deployed binary GraphSAGE aggregates
            real features: :obj:`"native"`
            (:mod:`pyg_qgnn.deploy.float_aggregate`) or :obj:`"torch"`.
    """
    int8_gemm: bool
    numpy_popcount: bool
    native: bool
    faiss: bool
    hamming_knn: str
    binary_matmul: str
    int8_aggregate: str
    int8_elementwise: str
    packed_bits: str
    float_aggregate: str


@functools.lru_cache(maxsize=None)
def backend() -> Backend:
    r"""The :class:`Backend` of this machine (probed on first call).

    Preferences follow measurements on a 2-core AVX-512 CPU (16 clouds of
    1024 points, :math:`k = 20`): the C kernel is several times faster than
    the counting search of faiss, itself 2 to 3 times faster than its heap
    search and 5 times faster than float distances and top-k; the
    :obj:`int8` GEMM is the fastest exact binary matmul, ahead of 64-bit
    popcounts (whose XOR needs a scratch tensor per chunk).
    """
    from pyg_qgnn.deploy.integer_aggregate import aggregate_kernel
    from pyg_qgnn.deploy.integer_elementwise import native_available
    from pyg_qgnn.deploy.knn import native_kernel
    from pyg_qgnn.deploy.float_aggregate import available
    from pyg_qgnn.deploy.packed_bits import packed_kernels

    int8_gemm = _has_int8_gemm()
    numpy_popcount = _has_numpy_popcount()
    native = native_kernel() is not None
    faiss = _has_faiss()
    if int8_gemm:
        matmul = 'int8'
    elif numpy_popcount:
        matmul = 'popcount'
    else:
        matmul = 'torch'
    knn = 'native' if native else 'faiss' if faiss else 'torch'
    aggregate = 'native' if aggregate_kernel() is not None else 'torch'
    return Backend(int8_gemm=int8_gemm, numpy_popcount=numpy_popcount,
                   native=native, faiss=faiss, hamming_knn=knn,
                   binary_matmul=matmul, int8_aggregate=aggregate,
                   int8_elementwise='native' if native_available() else 'torch',
                   packed_bits='native' if packed_kernels() is not None
                   else 'torch',
                   float_aggregate='native' if available() else 'torch')


def compile_native(name: str, source: str,
                   flags: Optional[List[str]] = None) -> Optional[ctypes.CDLL]:
    r"""Builds the C :obj:`source` into a shared library with the system
    compiler (:obj:`$CC`, else :obj:`cc`), optimized for this CPU, and loads
    it; :obj:`None` if there is no compiler or the build fails. Builds are
    cached by a hash of source and flags, so a later process only loads.
    Extra compiler :obj:`flags` (e.g. :obj:`["-fopenmp",
    "-ffp-contract=off"]`) are added to every build; where one with
    :obj:`-fopenmp` fails (no OpenMP runtime), it is tried without, so the
    source must build either way (test :obj:`_OPENMP`)."""
    compiler = shutil.which(os.environ.get('CC', 'cc'))
    if compiler is None:
        return None
    from pyg_qgnn.datasets.locate import cache_root

    extra = list(flags or [])
    serial = [flag for flag in extra if flag != '-fopenmp']
    extras = [extra] if serial == extra else [extra, serial]
    for options in [base + more for base in (['-O3', '-march=native'],
                                             ['-O3']) for more in extras]:
        # -march=native code may not run on another CPU sharing the cache.
        key = [source, compiler, _cpu_identity()] + options
        digest = hashlib.sha256('\0'.join(key).encode())
        folder = cache_root() / 'native'
        library = folder / f'{name}-{digest.hexdigest()[:16]}.so'
        try:
            if not library.exists():
                _build(compiler, options, source, folder, library)
            return ctypes.CDLL(str(library))
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def native_function(name: str, source: str, argtypes: list,
                    flags: Optional[List[str]] = None) -> Optional[Callable]:
    r"""The C function :obj:`name` (returning :obj:`int`) of :obj:`source`
    built by :func:`compile_native` with the extra :obj:`flags`, with its
    argument types set, or :obj:`None` where it cannot be built."""
    library = compile_native(name, source, flags)
    if library is None:
        return None
    function = getattr(library, name)
    function.restype = ctypes.c_int
    function.argtypes = argtypes
    return function


@functools.lru_cache(maxsize=None)
def _cpu_identity() -> str:
    r"""The machine type and the CPU's feature flags, where readable."""
    flags = ''
    try:
        with open('/proc/cpuinfo') as f:
            flags = next((line for line in f if line.startswith('flags')), '')
    except OSError:
        pass
    return f'{platform.machine()}|{platform.processor()}|{flags.strip()}'


def _build(compiler: str, flags: list, source: str, folder: Path,
           library: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        c_file = Path(scratch) / 'kernel.c'
        c_file.write_text(source)
        built = Path(scratch) / library.name
        subprocess.run([compiler, *flags, '-shared', '-fPIC', '-o',
                        str(built), str(c_file)], check=True,
                       capture_output=True, timeout=120)
        os.replace(built, library)  # atomic: concurrent builds are safe


def parallel_map(function: Callable, tasks: list, threads: int) -> list:
    r""":obj:`[function(task) for task in tasks]`, on :obj:`threads`
    threads of a pool kept for the process (for native kernels that release
    the GIL) where there are several threads and tasks."""
    if threads > 1 and len(tasks) > 1:
        return list(_pool(threads).map(function, tasks))
    return [function(task) for task in tasks]


@functools.lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    r"""One pool per thread count, kept for the process: starting threads
    on every call would cost as much as a small kernel call."""
    return ThreadPoolExecutor(threads, thread_name_prefix='pyg_qgnn')


def _has_int8_gemm() -> bool:
    a = torch.tensor([[1, -1], [-1, -1]], dtype=torch.int8)
    try:
        out = torch._int_mm(a, a.t().contiguous())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return torch.equal(out, torch.tensor([[2, 0], [0, 2]], dtype=torch.int32))


def _has_numpy_popcount() -> bool:
    try:
        import numpy as np
    except ImportError:
        return False
    return hasattr(np, 'bitwise_count')


def _has_faiss() -> bool:
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, 'IndexBinaryFlat')
