"""Compiled kernels, cached in memory by source hash and on disk across processes.

Numba cannot cache functions created with ``exec`` (numba issue 3501), so each
generated source is written to ``<cache dir>/k_<hash>.py`` and imported; the
``cache=True`` in its decorators then stores the machine code next to it and
a second process loads it instead of compiling. Files are written atomically
and never rewritten, so concurrent tuning workers can share the directory.
The hash covers the source, which names the code generator's own version, so
a change to the intrinsics or renderer never reuses stale machine code.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import types

_HERE = Path(__file__).parent
_CODEGEN_FILES = ("intrinsics.py", "math_intrinsics.py", "render_numba.py", "launch.py")
CODEGEN_VERSION = hashlib.sha256(b"".join((_HERE / f).read_bytes() for f in _CODEGEN_FILES)).hexdigest()[:12]

_loaded: dict[str, Any] = {}


def cache_dir() -> Path:
    """``$CONVTUNE_CACHE_DIR``, else ``~/.cache/convtune/kernels``."""
    root = os.environ.get("CONVTUNE_CACHE_DIR") or Path.home() / ".cache" / "convtune" / "kernels"
    return Path(root)


@dataclass(frozen=True)
class CompiledModule:
    """A generated module's stage functions, compiled and ready to launch."""

    stages: tuple[Any, ...]
    """The numba dispatchers, kept alive because the addresses point into them."""
    addresses: np.ndarray
    extents: np.ndarray
    path: Path
    compile_seconds: float
    """Time to compile (or load from the disk cache) in this process."""
    disk_cache_hit: bool
    """True when numba loaded machine code compiled by an earlier process."""
    checked: bool = False
    """Bounds-checked build (``CONVTUNE_CHECK_BOUNDS``)."""


def function_address(dispatcher: Any, sig: tuple) -> int:
    """The machine-code address of ``dispatcher``'s overload for ``sig`` (compiled already)."""
    cres = dispatcher.overloads[sig]
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:24]


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over
    it): a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_module(source: str, prefix: str) -> Any:
    """Import generated source from ``<cache dir>/<prefix>_<hash>.py``
    (written atomically, once)."""
    digest = _digest(source)
    name = f"convtune_{prefix}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    path = cache_dir() / f"{prefix}_{digest}.py"
    if not path.exists():
        write_atomically(path, source.encode())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    # Numba keys its cache on the function's module: it must be findable in
    # sys.modules, or numba treats the function as dynamic and cannot reload it.
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _compiled_marker(digest: str) -> Path:
    return cache_dir() / f"k_{digest}.compiled"


def machine_code_cached(source: str) -> bool:
    """Whether this process or an earlier one compiled ``source``: one file
    test (a marker written once numba cached the stages), not a search of
    numba's index files, which took 4.4 ms a kernel in a cache of 2900."""
    digest = _digest(source)
    return digest in _loaded or _compiled_marker(digest).exists()


def compile_source(source: str) -> CompiledModule:
    """Import a generated module and compile its stages for flat float32 arrays."""
    digest = _digest(source)
    if digest in _loaded:
        return _loaded[digest]
    module = load_module(source, "k")
    path = Path(module.__file__)
    sig = (types.int64,) + (types.Array(types.float32, 1, "C"),) * len(module.BUFFERS)
    start = time.perf_counter()
    dispatchers = tuple(getattr(module, stage) for stage, _ in module.STAGES)
    for d in dispatchers:
        d.compile(sig)
    seconds = time.perf_counter() - start
    hit = all(sum(d.stats.cache_hits.values()) > 0 for d in dispatchers)
    marker = _compiled_marker(digest)
    if not marker.exists():  # also for machine code cached before markers existed
        write_atomically(marker, b"")
    compiled = CompiledModule(
        dispatchers, np.array([function_address(d, sig) for d in dispatchers], np.int64),
        np.array([extent for _, extent in module.STAGES], np.int64), path, seconds, hit, module.CHECKED)
    _loaded[digest] = compiled
    return compiled
