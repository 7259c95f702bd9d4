"""Every way the command line is misused ends in one line saying why and a
non-zero status, never a usage block or a traceback."""
import subprocess
import sys

import pytest
from conftest import ROOT
from conftest import SMALL_CONV as CONV

from convtune.ir import conv2d
from convtune.schedules.target import host_target
from convtune.tuner import records
from convtune.tuner.cli import main
from convtune.tuner.records import ErrorCode, Record


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


@pytest.mark.parametrize("args,message", [
    (["tune", "--trials", "abc"], "convtune tune: error: argument --trials: 'abc' is not an integer"),
    (["tune", "--trials", "0"], "convtune tune: error: argument --trials: '0' must be positive"),
    (["tune", "--timeout", "0"], "convtune tune: error: argument --timeout: '0' must be positive"),
    (["tune", "--timeout", "inf"], "convtune tune: error: argument --timeout: 'inf' must be positive"),
    (["tune", "--repeats", "-1"], "convtune tune: error: argument --repeats: '-1' must be positive"),
    (["tune", "--strategy", "annealing"], "convtune tune: error: argument --strategy: invalid choice"),
    (["tune", "--target", "gpu"], "convtune tune: error: argument --target: invalid choice: 'gpu'"),
    (["bench", "--peers", "onnxruntime,nosuch"], "convtune bench: error: argument --peers: unknown peer(s) nosuch"),
    (["bench", "--rounds", "0"], "convtune bench: error: argument --rounds: '0' must be positive"),
    (["bench", "--threads", "0"], "convtune bench: error: argument --threads: '0' must be positive"),
    (["frobnicate"], "convtune: error: argument command: invalid choice: 'frobnicate'"),
    ([], "convtune: error: the following arguments are required: command"),
])
def test_argument_errors_are_one_line_with_status_2(args, message, tmp_path, capsys):
    if args[:1] == ["tune"]:  # were a bad value accepted, a small run in tmp_path, never the default log
        args = ["tune", "--conv", CONV, "--trials", "1", "--log", str(tmp_path / "x.jsonl"), *args[1:]]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert one_line(capsys).startswith(message)


@pytest.mark.parametrize("args,message", [
    (["tune", "--conv", "N=1,C=8,H=8"], "convtune tune: --conv: missing W, K, R"),
    (["tune", "--conv", "N=1,C=8,H=8,W=8,K=4,R=3,groups=3"], "convtune tune: groups: 3 does not divide"),
    (["tune", "--conv", "N=1,C=8,H=8,W=x,K=4,R=3"], "convtune tune: --conv: W='x' is not an integer"),
    (["tune", "--suite", "nosuch"], "convtune tune: unknown suite 'nosuch'"),
    (["show", "/nonexistent/log.jsonl"], "convtune show:"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    assert one_line(capsys).startswith(message)


def test_the_installed_command_prints_no_usage_block():
    out = subprocess.run([sys.executable, "-m", "convtune.tuner.cli", "tune", "--trials", "abc"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "convtune tune: error: argument --trials: 'abc' is not an integer\n"


def test_a_plugin_that_is_missing_is_one_line(tmp_path, capsys):
    log = tmp_path / "x.jsonl"
    assert main(["tune", "--conv", CONV, "--log", str(log), "--plugin", "no_such_plugin_module"]) == 2
    assert one_line(capsys) == ("convtune tune: --plugin no_such_plugin_module: ModuleNotFoundError: "
                                "No module named 'no_such_plugin_module' (is it on PYTHONPATH?)")
    assert not log.exists()


def test_a_plugin_that_raises_on_import_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_cli_plugin.py").write_text('raise RuntimeError("no templates today\\nsecond line")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["tune", "--conv", CONV, "--log", str(tmp_path / "x.jsonl"), "--plugin", "broken_cli_plugin"]) == 2
    assert one_line(capsys) == "convtune tune: --plugin broken_cli_plugin: RuntimeError: no templates today"


@pytest.mark.parametrize("url,status,why", [
    ("notaurl", 2, "Could not parse SQLAlchemy URL"),
    ("postgresql+psycopg://x@127.0.0.1:1/db", 1, "Connection refused"),
])
def test_a_storage_that_fails_is_one_line(url, status, why, tmp_path, capsys):
    log = tmp_path / "x.jsonl"
    assert main(["tune", "--conv", CONV, "--trials", "1", "--log", str(log), "--storage", url]) == status
    err = one_line(capsys)
    assert err.startswith(f"convtune tune: storage {url!r}: ") and why in err
    assert not log.exists()  # nothing was measured


def test_log_best_without_a_successful_record_writes_nothing(tmp_path, capsys):
    log, out = tmp_path / "failed.jsonl", tmp_path / "best.jsonl"
    wl = conv2d(1, 8, 8, 8, 8, 3, padding=1)
    records.append(log, Record(wl.to_dict(), host_target().to_dict(), {"algorithm": "direct"}, [], ErrorCode.CRASH))
    assert main(["log", "best", str(log), str(out)]) == 1
    assert one_line(capsys) == f"convtune log best: no successful record in {log}; {out} not written"
    assert not out.exists()
