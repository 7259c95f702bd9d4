"""onnxruntime's per-node profile matched to convtune's plan nodes by what
they compute: run order within a key, first runs left out, reorders apart,
and no guess where the runtimes' counts of a key differ."""
from __future__ import annotations

import numpy as np
import pytest
from model_graphs import tiny_onnx_model

from convtune.tuner.peer_profile import OnnxruntimeProfile, match, node_key, node_seconds


def event(name: str, op: str, ts: int, dur: int, weight: list[int] | None, out: list[int]) -> dict:
    inputs = [{"float": [1, 8, 9, 9]}] + ([{"float": weight}] if weight else [])
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "input_type_shape": inputs, "output_type_shape": [{"float": out}]}}


def test_nodes_are_keyed_by_what_they_compute_in_run_order_and_the_first_run_is_left_out() -> None:
    conv = [16, 8, 3, 3]  # onnxruntime padded a conv of 8 or 12 outputs to 16
    events = []
    for run, base in enumerate((0, 1000, 2000)):
        slow = 1000 if run == 0 else 0  # the first run (allocations, page faults) is left out
        events += [event("late_conv", "FusedConv", base + 50, 30 + slow, conv, [1, 16, 9, 9]),
                   event("early_conv", "Conv", base + 10, 20 + run + slow, conv, [1, 16, 9, 9]),
                   event("reorder", "ReorderOutput", base + 90, 5, None, [1, 16, 9, 9]),
                   event("pool", "MaxPool", base + 70, 7, None, [1, 16, 4, 4])]
    events.append({"cat": "Session", "name": "model_run", "ts": 0, "dur": 99, "args": {}})
    per_key, reorders = node_seconds(events)
    key = node_key("Conv", conv, [1, 16, 9, 9])
    assert per_key[key] == pytest.approx([21.5e-6, 30e-6])  # early first, medians of runs 2 and 3
    assert per_key[node_key("MaxPool", None, [1, 16, 4, 4])] == pytest.approx([7e-6])
    assert reorders == pytest.approx(5e-6)
    assert node_key("Conv", [12, 8, 3, 3], [1, 12, 9, 9]) == key != node_key("Conv", [17, 8, 3, 3], [1, 17, 9, 9])
    ours = [("/a/Conv", key), ("/b/Conv", key), ("/p/MaxPool", node_key("MaxPool", [9], [1, 16, 4, 4]))]
    assert match(ours, per_key) == pytest.approx({"/a/Conv": 21.5e-6, "/b/Conv": 30e-6, "/p/MaxPool": 7e-6})
    # a third conv of that key on our side: which of ours is which peer node would be a guess
    assert match([*ours, ("/c/Conv", key)], per_key) == pytest.approx({"/p/MaxPool": 7e-6})


def test_every_node_of_a_real_model_profile_is_timed(tmp_path) -> None:
    path = tmp_path / "tiny.onnx"
    tiny_onnx_model(path)
    import onnx

    model = onnx.load(path)
    (x,) = model.graph.input
    shape = [d.dim_value for d in x.type.tensor_type.shape.dim]
    profile = OnnxruntimeProfile(path, threads=1)
    for _ in range(2):  # in blocks, as the bench runs it between its own profiles: one profile of every run
        profile.run({x.name: np.ones(shape, np.float32)}, 2)
    per_key, _ = profile.close()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert sum(len(v) for k, v in per_key.items() if k[0] == "Conv") == len(convs)
    assert all(s > 0 for v in per_key.values() for s in v)
    assert not list(tmp_path.glob("*.json")) and not list(__import__("pathlib").Path.cwd().glob("onnxruntime_profile*"))
