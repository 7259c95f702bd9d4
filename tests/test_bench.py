"""``convtune bench`` on a tiny suite: convtune's kernel is checked and timed
with a real peer (onnxruntime) and the FMA probe in the same rounds, peers
that are missing are reported, a peer that computes a different answer stops
the run (a benchmark against a wrong result would be meaningless). Each real
peer wrapper computes the reference result on layers that are awkward to
translate (where its package is installed)."""
import json

import numpy as np
import pytest
from rich.console import Console

from convtune.ir import conv2d, conv2d_reference, relative_error
from convtune.schedules.target import host_target
from convtune.schedules.templates import default_config
from convtune.tuner import bench
from convtune.tuner.peers import PEERS, PeerUnavailable
from convtune.tuner.suites import load_suite


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"tiny": [
        {"name": "t3x3", "N": 1, "C": 8, "H": 9, "W": 7, "K": 16, "R": 3, "S": 3, "stride": 1, "pad": 1},
        {"name": "tdw", "N": 1, "C": 16, "H": 8, "W": 8, "K": 16, "R": 3, "S": 3, "stride": 2, "pad": 1,
         "groups": 16},
    ]}))
    return str(path)


OPTIONAL = {"torch_nchw": "torch", "torch_cl": "torch"}
"""Peers whose package the test extra leaves out (torch's CPU build has to be
chosen by hand); onnxruntime is in it, so its tests always run."""
AWKWARD = {
    "asymmetric pads, strides, dilation, groups": conv2d(2, 6, 9, 8, 4, 3, 2, stride=(2, 1), dilation=(1, 2),
                                                         padding=(1, 0, 2, 1), groups=2),
    "depthwise same_lower stride 2": conv2d(1, 5, 7, 6, 5, 3, stride=2, padding="same_lower", groups=5),
    "1x1 stride 2 odd size": conv2d(1, 3, 7, 5, 7, 1, stride=2),
}
"""Layers where a wrapper's translation of padding (ONNX pads order, torch's
symmetric-only padding), stride, dilation or groups would go wrong."""


@pytest.mark.parametrize("layer", AWKWARD)
@pytest.mark.parametrize("peer", PEERS)
def test_peer_computes_the_reference_result(peer, layer, rng):
    if peer in OPTIONAL:
        pytest.importorskip(OPTIONAL[peer])
    wl = AWKWARD[layer]
    x = rng.uniform(-1, 1, wl.data_shape).astype(np.float32)
    w = rng.uniform(-1, 1, wl.weight_shape).astype(np.float32)
    assert relative_error(PEERS[peer](wl, x, w, 1)(), conv2d_reference(wl, x, w)) < 1e-4


def _missing_peer(wl, x, w, threads):
    raise PeerUnavailable("not installed here")


def _run(suite, monkeypatch, peers, configs=None):
    monkeypatch.setattr(bench, "PEERS", peers)
    return bench.run_bench(suite, configs=configs, threads=1, rounds=2, min_block_seconds=0.001)


def test_bench_times_convtune_peers_and_the_fma_probe_side_by_side(suite, monkeypatch):
    report = _run(suite, monkeypatch, {"onnxruntime": PEERS["onnxruntime"], "absent": _missing_peer})
    assert [la.name for la in report.layers] == ["t3x3", "tdw"]
    assert report.unavailable == {"absent": "not installed here"}
    for layer in report.layers:
        assert layer.config_source == "default" and layer.error < 1e-4
        assert set(layer.gflops) == {bench.CONVTUNE, "onnxruntime"} and min(layer.gflops.values()) > 0
        assert layer.fma_gflops > 0 and layer.fma_fraction == layer.gflops[bench.CONVTUNE] / layer.fma_gflops
    data = json.loads(report.to_json())
    assert data["geomean"]["fma_fraction"] == pytest.approx(
        np.exp(np.mean([np.log(la.fma_fraction) for la in report.layers])))
    assert data["geomean"]["best_peer_per_layer"] == pytest.approx(report.geomean("onnxruntime"))
    console = Console(width=250, record=True)
    console.print(bench.render_table(report))
    text = console.export_text()
    assert "t3x3" in text and "tdw" in text and "geomean" in text and "FMA probe" in text


def test_bench_uses_the_config_it_is_given(suite, monkeypatch):
    layers = dict((la.name, la.workload) for la in load_suite(suite)[1])
    chosen = default_config(layers["t3x3"], host_target())
    report = _run(suite, monkeypatch, {}, configs=lambda wl: (chosen, "tuned") if wl == layers["t3x3"] else None)
    assert [(la.config_source, la.config == chosen) for la in report.layers] == [("tuned", True), ("default", False)]


def test_a_peer_with_a_different_answer_stops_the_bench(suite, monkeypatch):
    def wrong_peer(wl, x, w, threads):
        return lambda: np.zeros(wl.out_shape, np.float32)

    with pytest.raises(AssertionError, match="peer wrong disagrees with the reference"):
        _run(suite, monkeypatch, {"wrong": wrong_peer})


def test_an_unknown_peer_is_refused_before_anything_is_measured(suite, monkeypatch):
    def no_ceilings(*args, **kw):
        raise AssertionError("measured the ceilings before checking the peers")

    monkeypatch.setattr(bench, "fma_ceiling", no_ceilings)
    with pytest.raises(ValueError, match="peers: unknown nosuch"):
        bench.run_bench(suite, peers=["onnxruntime", "nosuch"], threads=1, rounds=1)
