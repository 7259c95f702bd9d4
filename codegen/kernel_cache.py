"""Compiled kernels, cached in memory by source hash and on disk across processes.

Numba cannot cache functions created with ``exec`` (numba issue 3501), so each
generated source is written to ``<cache dir>/k_<hash>.py`` and imported; the
``cache=True`` in its decorator then stores the machine code next to it and a
second process loads it instead of compiling. Files are written atomically
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

from numba import types

_HERE = Path(__file__).parent
CODEGEN_VERSION = hashlib.sha256(
    b"".join((_HERE / f).read_bytes() for f in ("intrinsics.py", "render_numba.py"))).hexdigest()[:12]

_loaded: dict[str, Any] = {}


def cache_dir() -> Path:
    """``$CONVTUNE_CACHE_DIR``, else ``~/.cache/convtune/kernels``."""
    root = os.environ.get("CONVTUNE_CACHE_DIR") or Path.home() / ".cache" / "convtune" / "kernels"
    return Path(root)


@dataclass(frozen=True)
class CompiledFunction:
    dispatcher: Any
    path: Path
    compile_seconds: float
    """Time to compile (or load from the disk cache) in this process."""
    disk_cache_hit: bool
    """True when numba loaded machine code compiled by an earlier process."""


def compile_source(source: str, func_name: str, n_args: int) -> CompiledFunction:
    """Import the generated module and compile ``func_name`` for flat float32 arrays."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    if digest in _loaded:
        return _loaded[digest]
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"k_{digest}.py"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    name = f"convtune_kernel_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    # Numba keys its cache on the function's module: it must be findable in
    # sys.modules, or numba treats the function as dynamic and cannot reload it.
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    dispatcher = getattr(module, func_name)
    start = time.perf_counter()
    dispatcher.compile((types.Array(types.float32, 1, "C"),) * n_args)
    seconds = time.perf_counter() - start
    hit = sum(dispatcher.stats.cache_hits.values()) > 0
    compiled = CompiledFunction(dispatcher, path, seconds, hit)
    _loaded[digest] = compiled
    return compiled
