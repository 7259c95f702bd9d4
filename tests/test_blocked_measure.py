"""Kernels timed as a model runs them between convs (``MeasureOptions.blocked``):
input in the layout the kernel reads in place, output blocked when its vector
runs along channels; checked against the float64 reference all the same, and
logged as a study and records of their own."""
import numpy as np
import pytest

from convtune.codegen.layout_plan import between_convs
from convtune.ir.workload import conv2d
from convtune.schedules.target import host_target
from convtune.schedules.templates import schedule_from_config, search_space
from convtune.tuner import measure, records
from convtune.tuner.measure import MeasureOptions, measure_here
from convtune.tuner.search import tune

PLAIN = conv2d(1, 16, 9, 11, 24, 3, padding=1)
POINTWISE = conv2d(1, 16, 9, 11, 24, 1)
DEPTHWISE = conv2d(1, 16, 9, 11, 16, 3, padding=1, groups=16)
BLOCKED = MeasureOptions(repeats=1, min_repeat_seconds=0.0, cold_calls=1, blocked=True)


def _cases():
    for wl in (PLAIN, POINTWISE, DEPTHWISE):
        for name, space in search_space(wl, host_target()).items():
            yield pytest.param(wl, {"algorithm": name, **space.default}, id=f"{wl.short()}-{name}")


@pytest.mark.parametrize("wl, config", list(_cases()))
def test_every_template_is_timed_and_checked_in_model_layouts(wl, config):
    result = measure_here(wl.to_dict(), config, BLOCKED)
    assert result.error_code == records.ErrorCode.OK, result.error
    assert result.layouts == "blocked" and result.costs and min(result.costs) > 0
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
    result = measure_here(PLAIN.to_dict(), config, BLOCKED)
    assert result.error_code == records.ErrorCode.WRONG_ANSWER and "relative error" in result.error


def test_blocked_tuning_is_a_study_of_its_own_with_its_records_marked(tmp_path):
    log = tmp_path / "x.jsonl"
    options = MeasureOptions(repeats=1, min_repeat_seconds=0.0, cold_calls=1)
    nchw = tune(POINTWISE, log=log, strategy="random", n_trials=2, seed=1, options=options)
    blocked = tune(POINTWISE, log=log, strategy="random", n_trials=2, seed=1,
                   options=MeasureOptions(repeats=1, min_repeat_seconds=0.0, cold_calls=1, blocked=True))
    assert nchw.study_name != blocked.study_name and blocked.measured == 2  # nothing reused across layouts
    assert sorted(r.layouts for r in records.read(log)) == ["blocked", "blocked", "nchw", "nchw"]
