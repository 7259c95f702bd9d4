"""The convtune command line: tune, show, log best, exit codes, Ctrl-C."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from conftest import SMALL_CONV as CONV

from convtune.schedules import templates
from convtune.tuner import records, search
from convtune.tuner.cli import main, parse_conv


def convtune(*args, **kw):
    return subprocess.run([sys.executable, "-m", "convtune.tuner.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kw)


def test_parse_conv():
    wl = parse_conv("N=2,C=8,H=9,W=7,K=4,R=3,S=1,stride=1:2,pad=same,dilation=2,groups=4")
    assert (wl.N, wl.C, wl.K, wl.S, wl.stride, wl.dilation, wl.groups) == (2, 8, 4, 1, (1, 2), (2, 2), 4)
    assert parse_conv("N=1,C=3,H=5,W=5,K=4,R=3,pad=0:1:2:0").padding == (0, 1, 2, 0)
    fused = parse_conv("N=1,C=3,H=5,W=5,K=4,R=3,bias=1,residual=1,act=relu6")
    assert fused.bias and fused.residual and fused.activation.kind == "clip"


PLUGIN = """
from convtune.schedules import default_schedule
from convtune.schedules.space import Knob, Space
from convtune.schedules.templates import TEMPLATES, Template


def space(wl, target):
    return Space("probe", (Knob("x", (1,)),), (), {"x": 1})


TEMPLATES["probe"] = Template("probe", lambda wl: True, space, lambda wl, config, target: default_schedule(wl))
"""


def test_plugin_templates_are_in_the_search_space(tmp_path, monkeypatch):
    """The space is built in the tuning process, so ``--plugin`` must be
    imported there too, not only in the measurement worker."""
    (tmp_path / "cli_probe_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cli_probe_plugin", raising=False)
    monkeypatch.setattr(templates, "TEMPLATES", dict(templates.TEMPLATES))  # the registration is undone after
    spaces = []

    def fake_tune(wl, **kw):
        spaces.append(sorted(templates.search_space(wl)))
        return search.TuneResult(wl, "study", 0, 0, None, "budget")

    monkeypatch.setattr(search, "tune", fake_tune)
    assert main(["tune", "--conv", CONV, "--log", str(tmp_path / "x.jsonl"), "--plugin", "cli_probe_plugin"]) == 0
    assert len(spaces) == 1 and "probe" in spaces[0] and "direct" in spaces[0]


def test_tune_show_and_log_best(tmp_path):
    log = tmp_path / "t.jsonl"
    out = convtune("tune", "--conv", CONV, "--trials", "3", "--strategy", "random", "--seed", "1", "--log", str(log),
                   "--repeats", "2")
    assert out.returncode == 0, out.stderr
    assert "3 measured (0 failed" in out.stdout and "GFLOP/s" in out.stdout
    assert len(list(records.read(log))) == 3 and Path(str(log).replace(".jsonl", ".optuna.db")).exists()
    shown = convtune("show", str(log))
    assert shown.returncode == 0 and "N1 C8 8x8 K16 3x3 p1" in shown.stdout and "this machine" in shown.stdout
    assert "s/trial" in shown.stdout and "compile s" in shown.stdout
    best = tmp_path / "best.jsonl"
    assert convtune("log", "best", str(log), str(best)).returncode == 0
    (rec,) = list(records.read(best))
    assert rec.cost == min(r.cost for r in records.read(log))
    again = convtune("log", "best", str(log), str(best))
    assert again.returncode == 2 and "exists; not overwriting" in again.stderr


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path):
    log = tmp_path / "c.jsonl"
    args = [sys.executable, "-m", "convtune.tuner.cli", "tune", "--conv", CONV, "--trials", "5", "--strategy", "random",
            "--seed", "2", "--log", str(log), "--repeats", "2"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or not log.read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in out and "rerun the same command to resume" in out
    lines = log.read_text().splitlines()
    assert all(json.loads(line) for line in lines) and 1 <= len(lines) < 5
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and len(list(records.read(log))) == 5
