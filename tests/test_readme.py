"""The README's schedule example runs verbatim, so it cannot rot."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_schedule_example_runs_verbatim():
    code = readme_block("Experiment with a schedule in Python")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "def stage1(" in out.stdout
    assert re.search(r"convtune\s+\d+\.\d GFLOP/s", out.stdout)
    assert re.search(r"im2col \+ np\.dot\s+\d+\.\d GFLOP/s", out.stdout)
