"""Task extraction: unique convs keyed without their epilogue, counts, shares
from FLOPs then from measured times; dispatch serves a fused workload with
the config tuned on its bare conv."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from model_graphs import fused_conv_graph

from convtune.codegen.verify import TOLERANCE, check_kernel
from convtune.ir import conv2d
from convtune.ir.graph import GraphError, ModelGraph
from convtune.schedules.target import host_target
from convtune.schedules.templates import default_config
from convtune.tuner import records
from convtune.tuner.dispatch import FallbackWarning, apply_history_best, tuning_workload
from convtune.tuner.records import Record
from convtune.tuner.tasks import estimate_shares, extract_tasks

BARE = conv2d(1, 8, 8, 8, 16, 3, padding=1)
RELU = conv2d(1, 8, 8, 8, 16, 3, padding=1, bias=True, activation="relu")
RESIDUAL = conv2d(1, 8, 8, 8, 16, 3, padding=1, bias=True, residual=True, activation="relu")
POINTWISE = conv2d(1, 16, 8, 8, 32, 1, stride=2, bias=True)


def test_epilogue_variants_are_one_task_with_flop_shares() -> None:
    tasks = extract_tasks(fused_conv_graph([RELU, POINTWISE, RESIDUAL, RELU]))
    assert [t.workload for t in tasks] == [BARE, tuning_workload(POINTWISE)]
    assert [t.count for t in tasks] == [3, 1]
    assert tasks[0].variants == [RELU, RESIDUAL] and tasks[0].nodes == ["conv0", "conv2", "conv3"]
    flops = [3 * BARE.flops, POINTWISE.flops]
    assert [t.share for t in tasks] == pytest.approx([f / sum(flops) for f in flops])


def test_measured_times_refine_shares_and_unmeasured_tasks_get_the_median_speed() -> None:
    depthwise = conv2d(1, 32, 16, 16, 32, 3, padding=1, groups=32)
    tasks = extract_tasks(fused_conv_graph([RELU, depthwise, POINTWISE]))
    slow_depthwise = {BARE.key: BARE.flops / 100e9, depthwise.key: depthwise.flops / 5e9}
    estimate_shares(tasks, lambda wl: slow_depthwise.get(wl.key))
    seconds = [BARE.flops / 100e9, depthwise.flops / 5e9, POINTWISE.flops / np.median([100e9, 5e9])]
    assert [t.share for t in tasks] == pytest.approx([s / sum(seconds) for s in seconds])
    assert sum(t.share for t in tasks) == pytest.approx(1.0)
    assert tasks[1].share > tasks[1].flops / sum(t.flops for t in tasks)  # slow per FLOP: more than its FLOPs


def test_a_graph_without_fused_convs_or_with_a_bad_workload_is_refused() -> None:
    with pytest.raises(GraphError, match="model 'empty' has no FusedConv node"):
        extract_tasks(ModelGraph("empty"))
    graph = fused_conv_graph([RELU])
    graph.node("conv0").attrs["workload"] = "3x3"
    with pytest.raises(GraphError, match=r"node 'conv0' \(FusedConv\): attrs\['workload'\] is not a Conv2D"):
        extract_tasks(graph)


def test_dispatch_applies_the_bare_convs_config_to_its_fused_variants(tmp_path) -> None:
    config = default_config(BARE)  # valid on any host; "tuned" below says where it came from
    log = tmp_path / "log.jsonl"
    records.append(log, Record(BARE.to_dict(), host_target().to_dict(), config, [1e-4]))
    best = apply_history_best(log)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        for wl in (RELU, RESIDUAL):
            assert best.config_for(wl) == (config, "tuned")
            assert check_kernel(best.kernel(wl), np.random.default_rng()) < TOLERANCE


def test_resnet18_has_11_conv_tasks_whose_shares_sum_to_1() -> None:
    from convtune.ir.model_passes import optimize
    from convtune.ir.onnx_frontend import import_model
    from convtune.tuner.zoo import build_model

    tasks = extract_tasks(optimize(import_model(build_model("resnet18"))))
    assert len(tasks) == 11 and sum(t.count for t in tasks) == 20
    assert sum(t.share for t in tasks) == pytest.approx(1.0)
    stem = tasks[0].workload
    assert (stem.C, stem.K, stem.R, stem.stride) == (3, 64, 7, (2, 2)) and tasks[0].count == 1
    assert max(t.count for t in tasks) == 4  # layer1's 3x3: with a ReLU and with a residual, one task
    assert any(len(t.variants) == 2 for t in tasks)
