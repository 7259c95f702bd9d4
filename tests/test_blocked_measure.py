"""Kernels timed as a model runs them between convs (``MeasureOptions.blocked``):
input in the layout the kernel reads in place, output blocked when its vector
runs along channels, where the model's plan passes them so whatever the other
convs' configs (``Task.blocked``); checked against the float64 reference all
the same, and logged as a study and records of their own."""
from dataclasses import replace

import numpy as np
import pytest
from onnx import helper
from onnx_models import make_model, weights

from convtune.codegen.layout_plan import between_convs
from convtune.ir.model_passes import optimize
from convtune.ir.onnx_frontend import import_model
from convtune.ir.workload import conv2d
from convtune.schedules.target import host_target
from convtune.schedules.templates import schedule_from_config, search_space
from convtune.tuner import measure, records
from convtune.tuner.measure import MeasureOptions, Measurer, measure_here
from convtune.tuner.search import tune
from convtune.tuner.tasks import extract_tasks

PLAIN = conv2d(1, 16, 9, 11, 24, 3, padding=1)
POINTWISE = conv2d(1, 16, 9, 11, 24, 1)
DEPTHWISE = conv2d(1, 16, 9, 11, 16, 3, padding=1, groups=16)
QUICK = MeasureOptions(repeats=1, min_repeat_seconds=0.0, cold_calls=1)


def blocked(wl, arguments=("data", "out")):  # type: ignore[no-untyped-def]
    return replace(QUICK, blocked=((wl.key, arguments),))


def _cases():
    for wl in (PLAIN, POINTWISE, DEPTHWISE):
        for name, space in search_space(wl, host_target()).items():
            yield pytest.param(wl, {"algorithm": name, **space.default}, id=f"{wl.short()}-{name}")


@pytest.mark.parametrize("wl, config", list(_cases()))
def test_every_template_is_timed_and_checked_in_model_layouts(wl, config):
    result = measure_here(wl.to_dict(), config, blocked(wl))
    assert result.error_code == records.ErrorCode.OK, result.error
    assert result.layouts == "data+out" and result.costs and min(result.costs) > 0
    layouts = between_convs(schedule_from_config(wl, config).state, host_target().vector_lanes)
    # a vector along channels writes blocked; along the row (depthwise_w, toeplitz) NCHW
    assert ("out" in layouts) == (config["algorithm"] not in ("depthwise_w", "toeplitz"))


def test_a_blocked_output_that_disagrees_with_the_reference_is_a_wrong_answer(monkeypatch):
    """The blocked output is unpacked and compared like an NCHW one: against
    the reference of other inputs, the candidate is refused."""
    real = measure._inputs_and_reference

    def mismatched(wl):  # type: ignore[no-untyped-def]
        x, ref = real(wl)
        return x, ref + np.float32(1.0)

    monkeypatch.setattr(measure, "_inputs_and_reference", mismatched)
    config = {"algorithm": "direct", **search_space(PLAIN, host_target())["direct"].default}
    result = measure_here(PLAIN.to_dict(), config, blocked(PLAIN, ("out",)))
    assert result.error_code == records.ErrorCode.WRONG_ANSWER and "relative error" in result.error


def test_blocked_tuning_is_a_study_of_its_own_with_its_records_marked(tmp_path):
    log = tmp_path / "x.jsonl"
    nchw = tune(POINTWISE, log=log, strategy="random", n_trials=2, seed=1, options=QUICK)
    data = tune(POINTWISE, log=log, strategy="random", n_trials=2, seed=1, options=blocked(POINTWISE, ("data",)))
    assert nchw.study_name != data.study_name and data.measured == 2  # nothing reused across layouts
    assert sorted(r.layouts for r in records.read(log)) == ["data", "data", "nchw", "nchw"]
    with pytest.raises(ValueError, match="other caches or layouts"), Measurer(QUICK) as measurer:
        tune(POINTWISE, log=log, n_trials=1, options=blocked(POINTWISE), measurer=measurer)


def test_tasks_say_which_arguments_the_plan_passes_blocked_whatever_the_neighbours_configs(rng):
    """An inverted residual block (mobilenet_v2): 1x1 expand, depthwise,
    1x1 project, then a 3x3. The depthwise may read and write NCHW
    (depthwise_w), so the expand's output and the project's input are timed
    NCHW; the project writes for a 3x3, the 3x3 reads it blocked; the model's
    input and output are NCHW. The depthwise itself is timed blocked on both
    sides: its writer and reader are not depthwise (as depthwise_w it has
    no blocked output to time: ``between_convs``)."""
    inits = {"we": weights(rng, 32, 8, 1, 1), "wd": weights(rng, 32, 1, 3, 3), "wp": weights(rng, 16, 32, 1, 1),
             "w3": weights(rng, 16, 16, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "we"], ["e"]), helper.make_node("Relu", ["e"], ["re"]),
             helper.make_node("Conv", ["re", "wd"], ["d"], pads=[1, 1, 1, 1], group=32),
             helper.make_node("Relu", ["d"], ["rd"]), helper.make_node("Conv", ["rd", "wp"], ["p"]),
             helper.make_node("Conv", ["p", "w3"], ["y"], pads=[1, 1, 1, 1])]
    graph = optimize(import_model(make_model(nodes, {"x": (1, 8, 10, 10)}, {"y": (1, 16, 10, 10)}, inits)))
    by_weight = {t.workload.K * 100 + t.workload.C: t.blocked for t in extract_tasks(graph)}
    assert by_weight == {32 * 100 + 8: (), 32 * 100 + 32: ("data", "out"), 16 * 100 + 32: ("out",),
                         16 * 100 + 16: ("data",)}
