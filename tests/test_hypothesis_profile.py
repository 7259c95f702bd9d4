"""The project's Hypothesis profile holds in CI too: each run draws new
examples, and a failure says how to replay it. Checked by running pytest, with
CI set (as ``.ci/run`` has it) and this folder's conftest as a plugin, on a
tiny property file."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PROPERTY_FILE = '''
import os
from hypothesis import given, settings, strategies as st

@settings(max_examples=20)
@given(st.integers(0, 2**62))
def test_draws(x):
    with open(os.environ["DRAWS"], "a") as f:
        print(x, file=f)

@given(st.integers())
def test_fails(x):
    assert x != x
'''


def run_pytest(tmp_path: Path, name: str, *args: str) -> tuple[set[int], str]:
    """Run the property file once; returns the examples ``test_draws`` saw and
    pytest's output."""
    draws = tmp_path / f"{name}.txt"
    env = os.environ | {"CI": "true", "DRAWS": str(draws),
                        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                          "test_props.py", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    return {int(line) for line in draws.read_text().split()}, out.stdout + out.stderr


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one process", "two xdist workers"])
def test_ci_runs_draw_new_examples_and_failures_say_how_to_replay(tmp_path, workers):
    """With pytest-xdist (the suite's default) the seed printed by the
    controller must be the one its workers drew from."""
    (tmp_path / "test_props.py").write_text(PROPERTY_FILE)
    first, output = run_pytest(tmp_path, "first", *workers)
    second, _ = run_pytest(tmp_path, "second", *workers)
    assert "1 failed, 1 passed" in output, output
    assert first != second, "two CI runs drew the same examples: the profile is derandomized"
    assert "@reproduce_failure" in output, output  # print_blob
    seed = re.search(r"rerun with --hypothesis-seed=(\d+)", output)
    assert seed, output
    replayed, _ = run_pytest(tmp_path, "replayed", *workers, f"--hypothesis-seed={seed[1]}")
    assert replayed == first
