"""The whole-model commands: tune MODEL (resumes measuring nothing twice),
bench MODEL (end to end against onnxruntime, layers, start-up), report, and
their error paths in one line with status 2."""
from __future__ import annotations

import json

import numpy as np
import pytest
from model_graphs import tiny_onnx_model

from convtune.schedules.target import host_target
from convtune.schedules.templates import TEMPLATES
from convtune.tuner import records
from convtune.tuner.cli import main
from convtune.tuner.cli_model import names_a_model
from convtune.tuner.dispatch import FallbackWarning
from convtune.tuner.model_bench import CONVTUNE, ONNXRUNTIME, PYTORCH, PYTORCH_CL, peak_resident_mib, start_up


def one_line(capsys) -> str:  # type: ignore[no-untyped-def]
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    tiny_onnx_model(path)
    return path


@pytest.fixture(scope="module")
def tuned(tiny, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The tiny model tuned with 2 trials a task: (log, first run's output)."""
    log = tmp_path_factory.mktemp("logs") / "tiny.jsonl"
    args = ["tune", str(tiny), "--trials", "2", "--log", str(log), "--repeats", "2", "--seed", "0"]
    assert main(args) == 0
    return log, args


def test_tune_model_tunes_each_task_and_a_rerun_measures_nothing(tuned, capsys) -> None:
    log, args = tuned
    recs = list(records.read(log))
    assert len(recs) == 4 and all(r.ok for r in recs)  # 2 tasks x 2 trials
    assert len({r.workload_key for r in recs}) == 2
    assert main(args) == 0
    assert len(list(records.read(log))) == 4
    out = capsys.readouterr().out
    assert "2 conv tasks (3 convs)" in out and "share of time" in out and "% FMA" in out


def test_bench_command_times_the_model_against_onnxruntime_and_profiles_every_node(tuned, tiny, tmp_path,
                                                                                   capsys) -> None:
    log, _ = tuned
    out = tmp_path / "bench.json"
    assert main(["bench", str(tiny), "--log", str(log), "--rounds", "1", "--no-startup", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["error"] < 1e-4 and report["startup"] == {}
    try:
        import torch  # noqa: F401
        compared = {CONVTUNE, ONNXRUNTIME, PYTORCH, PYTORCH_CL}
    except ImportError:
        compared = {CONVTUNE, ONNXRUNTIME}
        assert "not installed" in report["left_out"][PYTORCH]
    assert set(report["seconds"]) == compared and all(s > 0 for s in report["seconds"].values())
    convs = [layer for layer in report["layers"] if layer["op"] == "FusedConv"]
    assert len(convs) == 3 and all(layer["gflops"] > 0 for layer in convs)
    assert all(layer["peer_seconds"] > 0 for layer in convs)  # onnxruntime's time for the same layer
    printed = capsys.readouterr().out
    assert "slowest 15 of 4 nodes" in printed and "onnxruntime ms" in printed


def test_a_positional_names_a_model_unless_it_is_a_layer_suite() -> None:
    assert names_a_model("mobilenet_v2") and names_a_model("my/net.onnx")
    assert not names_a_model("resnet18")  # also a layer suite: bench resnet18 --model for the model
    assert not names_a_model("mobilenetv2_dw") and not names_a_model("layers.json")


def test_start_up_runs_a_cold_then_a_warm_process_and_each_runtime_reports_its_peak_memory(tuned, tiny) -> None:
    log, _ = tuned
    ballast = np.ones(100_000_000, np.float32)  # 400 MB this process holds and the probes must not count
    seconds, peak_mb = start_up(tiny, str(log), threads=2)
    assert set(seconds) == {"cold", "warm"} and all(s > 0 for s in seconds.values())
    # A process that imported numpy and its runtime holds tens of MiB at least; a probe that reported
    # its parent's size (getrusage carries it across exec), or kilobytes as MiB, would be far off.
    assert set(peak_mb) == {CONVTUNE, ONNXRUNTIME}
    assert all(20 < mb < peak_resident_mib() - ballast.nbytes / 2**20 / 2 for mb in peak_mb.values()), peak_mb


def test_report_writes_the_pngs(tuned, tmp_path, capsys) -> None:
    log, _ = tuned
    assert main(["report", str(log), "-o", str(tmp_path / "r")]) == 0
    for name in ("tuning_curves.png", "layers.png"):
        assert (tmp_path / "r" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["tune", "nosuch", "--trials", "1"], "convtune tune: 'nosuch' is neither a zoo model (resnet18,"),
    (["bench", "nosuch.onnx"], "convtune bench: 'nosuch.onnx' is neither a zoo model"),
    (["tune", "{bad}", "--trials", "1"], "convtune tune: {bad}: not a readable ONNX model"),
    (["bench", "{bad}", "--model"], "convtune bench: {bad}: not a readable ONNX model"),
    (["tune", "{tiny}", "--conv", "N=1,C=8,H=8,W=8,K=8,R=3"], "convtune tune: give a MODEL or --conv/--suite"),
    (["report", "{empty}"], "convtune report: {empty}: no record of this machine"),
    (["tune", "--refine-only"], "convtune tune: --refine and --refine-only need a MODEL"),
])
def test_model_command_errors_are_one_line_with_status_2(args, message, tiny, tmp_path, capsys) -> None:
    paths = {"bad": tmp_path / "bad.onnx", "tiny": tiny, "empty": tmp_path / "empty.jsonl"}
    paths["bad"].write_bytes(b"\x08\x99garbage" * 20)
    paths["empty"].write_text("")
    argv = [a.format(**paths) for a in args]
    assert main(argv) == 2
    assert one_line(capsys).startswith(message.format(**paths))


@pytest.mark.parametrize("name,flag", [("resnet18", ["--model"]), ("mobilenet_v2", [])])
def test_bench_runs_a_zoo_model_through_convtune_matching_onnxruntime(name, flag, tmp_path, monkeypatch,
                                                                      capsys) -> None:
    """A whole zoo model, untuned, on fresh random inputs: the bench fails
    (status 1) unless convtune's outputs are within 1e-4 of onnxruntime's."""
    monkeypatch.setenv("CONVTUNE_ZOO_DIR", str(tmp_path / "zoo"))
    out = tmp_path / "bench.json"
    with pytest.warns(FallbackWarning, match="no tuning log given"):
        code = main(["bench", name, *flag, "--rounds", "1", "--no-startup", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["error"] < 1e-4
    convs = [layer for layer in report["layers"] if layer["op"] == "FusedConv"]
    assert len(convs) == {"resnet18": 20, "mobilenet_v2": 52}[name]
    assert all(layer["peer_seconds"] > 0 for layer in convs)  # each matched to onnxruntime's node


def test_tune_refine_judges_each_tasks_algorithms_in_the_model_and_a_rerun_resumes(tuned, tiny, tmp_path,
                                                                                capsys) -> None:
    """``--refine`` after tuning: every task with records of two algorithms
    gets a record timed in the model (which dispatch then uses); a rerun
    has nothing left to refine."""
    log, args = tuned
    copy = tmp_path / "refine.jsonl"
    copy.write_text(log.read_text())
    target = host_target()
    for r in {r.workload_key: r for r in records.read(log)}.values():  # a second algorithm for every task
        wl = r.workload_obj
        records.append(copy, records.Record(wl.to_dict(), target.to_dict(),
                                            {"algorithm": "direct_w", **TEMPLATES["direct_w"].space(wl, target).default},
                                            [1.0], extra={"cache": "cold"}))
    refine = [*args[:5], str(copy), *args[6:], "--refine"]
    assert main(refine) == 0
    assert "refined 2 tasks" in capsys.readouterr().out
    refined = [r for r in records.read(copy) if r.cache == records.MODEL_CACHE]
    assert len(refined) == 2 and all(r.ok for r in refined)
    assert main(refine) == 0  # the tuning measures nothing again either
    assert "refined 0 tasks" in capsys.readouterr().out
    assert len([r for r in records.read(copy) if r.cache == records.MODEL_CACHE]) == 2


def test_refine_only_judges_the_logged_tasks_without_tuning_more(tuned, tmp_path, capsys) -> None:
    """``--refine-only`` with a budget above what the log has: no candidate
    is measured alone (the tuning records stay as they were), each task with
    two algorithms is refined."""
    log, args = tuned
    copy = tmp_path / "refine-only.jsonl"
    copy.write_text(log.read_text())
    target = host_target()
    for r in {r.workload_key: r for r in records.read(log)}.values():
        wl = r.workload_obj
        records.append(copy, records.Record(wl.to_dict(), target.to_dict(),
                                            {"algorithm": "direct_w", **TEMPLATES["direct_w"].space(wl, target).default},
                                            [1.0], extra={"cache": "cold"}))
    before = [r for r in records.read(copy)]
    argv = [*args[:3], "50", "--log", str(copy), *args[6:], "--refine-only"]
    assert main(argv) == 0
    assert "refined 2 tasks" in capsys.readouterr().out
    after = list(records.read(copy))
    assert [r for r in after if r.cache != records.MODEL_CACHE] == before
    assert len([r for r in after if r.cache == records.MODEL_CACHE]) == 2
