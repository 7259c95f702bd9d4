"""The disk cache: a second process builds the same kernel without compiling."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import fresh_seed

SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, 'tests')
from conftest import packed_schedule
from convtune.codegen import build
from convtune.codegen.verify import check_kernel
from convtune.ir import conv2d
k = build(packed_schedule(conv2d(1, 12, 9, 9, 16, 3, padding=1, bias=True)))
print(json.dumps({"hit": k.compiled.disk_cache_hit, "seconds": k.compiled.compile_seconds,
                  "err": check_kernel(k, np.random.default_rng(int(sys.argv[1]))), "path": str(k.compiled.path)}))
"""


def run(cache: Path, seed: int) -> dict:
    """Build and check the kernel in a new process, on inputs drawn from ``seed``."""
    env = dict(os.environ, CONVTUNE_CACHE_DIR=str(cache))
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(seed)], cwd=root, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_machine_code_from_disk(tmp_path):
    seed = fresh_seed()
    first, second = run(tmp_path, seed), run(tmp_path, seed)
    assert not first["hit"] and second["hit"]
    assert first["path"] == second["path"] and Path(first["path"]).parent == tmp_path
    assert any(tmp_path.glob("__pycache__/*.nbi")), "numba wrote no cache index"
    assert first["err"] < 1e-4 and second["err"] < 1e-4, (
        f"relative errors {first['err']:.3g} (compiled), {second['err']:.3g} (loaded) (inputs: seed={seed})")
    # Loading is much cheaper than compiling; a generous bound that noise cannot break.
    assert second["seconds"] < first["seconds"]
