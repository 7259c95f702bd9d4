"""The README's schedule example runs verbatim, so it cannot rot."""
import re
import subprocess
import sys

from conftest import ROOT


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_block(heading: str, cwd=ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the section's Python block as a newcomer would paste it."""
    out = subprocess.run([sys.executable, "-c", readme_block(heading)], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out


def test_schedule_example_runs_verbatim():
    out = run_block("Experiment with a schedule in Python")
    assert "def stage1(" in out.stdout
    assert re.search(r"convtune\s+\d+\.\d GFLOP/s", out.stdout)
    assert re.search(r"im2col \+ np\.dot\s+\d+\.\d GFLOP/s", out.stdout)


def test_inference_example_runs_verbatim_on_a_tuned_log(tmp_path):
    tuned = subprocess.run(
        [sys.executable, "-m", "convtune.tuner.cli", "tune", "--conv", "N=1,C=64,H=56,W=56,K=64,R=3,S=3,pad=1,bias=1,act=relu",
         "--trials", "2", "--repeats", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert tuned.returncode == 0, tuned.stderr
    assert (tmp_path / "logs" / "convtune.jsonl").exists()  # the default log the example reads
    out = run_block("Use tuned kernels at inference", cwd=tmp_path)
    assert "'tuned')" in out.stdout and "(1, 64, 56, 56)" in out.stdout
    assert "FallbackWarning" not in out.stderr


def test_session_example_runs_verbatim():
    out = run_block("Whole models", timeout=900)
    assert "(1, 1000)" in out.stdout
    assert re.search(r"end to end \d+\.\d+ ms", out.stdout)
