"""The install layout: one ``convtune`` package whose subpackages are the
repository's top-level folders. pyproject.toml lists the packages by hand
(setuptools cannot discover folders under a prefix), so a new subpackage that
is not listed would be missing from the wheel: this test catches that."""
import subprocess
import sys
import tomllib

import convtune
from conftest import ROOT


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"convtune": "."}
    listed = set(config["packages"])
    on_disk = {"convtune"} | {
        "convtune." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("ir", "schedules", "codegen", "tuner") for p in (ROOT / top).rglob("__init__.py")}
    assert listed == on_disk


def test_version_lives_in_one_place_and_the_cli_prints_it():
    out = subprocess.run([sys.executable, "-m", "convtune.tuner.cli", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith(f"convtune {convtune.__version__}, numba ")
    assert "llvmlite " in out and "numpy " in out


def test_import_convtune_is_cheap_and_gives_the_entry_points():
    code = "import sys, convtune; assert 'numba' not in sys.modules; print(convtune.conv2d.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "convtune.ir.workload"
