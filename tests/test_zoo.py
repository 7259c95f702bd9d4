"""The model zoo: valid ONNX that onnxruntime runs, torchvision's
architectures (parameter counts), O(1) activations on fresh random inputs,
BatchNormalization folded or kept computing the same function."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from convtune.tuner.cli import main
from convtune.tuner.zoo import ZOO, ZooError, build_model, resolve_model

TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872, "squeezenet1_1": 1_235_496,
    "vgg16": 138_357_544,
}
"""``sum(p.numel() for p in torchvision.models.NAME().parameters())``."""


def run(model, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def learned_parameters(model) -> int:  # type: ignore[no-untyped-def]
    """Initializer elements torchvision counts as parameters: not BN's running
    statistics, not Clip's bounds."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if "running_" not in t.name and not t.name.startswith("clip."))


@pytest.fixture(scope="module")
def unfolded() -> dict[str, object]:
    return {name: build_model(name, fold_bn=False) for name in ZOO}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_is_torchvision_architecture_and_runs_with_o1_outputs(name: str, unfolded, rng) -> None:
    model = unfolded[name]
    onnx.checker.check_model(model)
    assert learned_parameters(model) == TORCHVISION_PARAMETERS[name]
    y = run(model, rng.standard_normal((1, 3, 224, 224), dtype=np.float32))
    assert y.shape == (1, 1000)
    assert np.all(np.isfinite(y))
    assert 0.1 < float(y.std()) < 10, f"{name}: output std {y.std():.3g} is not O(1)"


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_folded_and_unfolded_batchnorm_compute_the_same(name: str, unfolded, rng) -> None:
    folded = build_model(name)
    onnx.checker.check_model(folded)
    ops = {n.op_type for n in folded.graph.node}
    assert "BatchNormalization" not in ops
    assert "BatchNormalization" in {n.op_type for n in unfolded[name].graph.node}
    assert all(len(n.input) == 3 for n in folded.graph.node if n.op_type == "Conv")  # with a bias
    x = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
    a, b = run(folded, x), run(unfolded[name], x)
    assert np.abs(a - b).max() / np.abs(b).max() < 1e-4


def test_zoo_models_use_the_operators_pytorch_exports(unfolded) -> None:
    ops = {name: [n for n in model.graph.node] for name, model in unfolded.items()}
    clips = [n for n in ops["mobilenet_v2"] if n.op_type == "Clip"]
    assert clips and all(len(n.input) == 3 for n in clips)  # min and max as inputs
    pools = [n for n in ops["squeezenet1_1"] if n.op_type == "MaxPool"]
    assert pools and all(onnx.helper.get_attribute_value(a) == 1 for n in pools for a in n.attribute
                         if a.name == "ceil_mode")
    assert any(n.op_type == "Concat" for n in ops["squeezenet1_1"])
    for name in ("resnet18", "resnet50", "mobilenet_v2"):
        types = [n.op_type for n in ops[name]]
        assert types[-4:] == ["GlobalAveragePool", "Flatten", "Gemm", "Identity"], name
    convs = {name: sum(n.op_type == "Conv" for n in nodes) for name, nodes in ops.items()}
    assert convs == {"resnet18": 20, "resnet50": 53, "mobilenet_v2": 52, "squeezenet1_1": 26, "vgg16": 13}


def test_batch_and_seed_change_the_model(rng) -> None:
    x = rng.standard_normal((2, 3, 224, 224), dtype=np.float32)
    y = run(build_model("squeezenet1_1", batch=2), x)
    assert y.shape == (2, 1000)
    other = run(build_model("squeezenet1_1", batch=2, seed=1), x)
    assert np.abs(y - other).max() > 1e-2


def test_resolve_model_builds_a_zoo_model_once_and_checks_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONVTUNE_ZOO_DIR", str(tmp_path / "zoo"))
    path = resolve_model("squeezenet1_1")
    stamp = path.stat().st_mtime_ns
    assert resolve_model("squeezenet1_1") == path and path.stat().st_mtime_ns == stamp
    assert resolve_model(str(path)) == path
    with pytest.raises(ZooError, match="'nosuch' is neither a zoo model"):
        resolve_model("nosuch")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(ZooError, match="bad.onnx: not a"):
        resolve_model(bad)
    with pytest.raises(ZooError, match="is a directory"):
        resolve_model(tmp_path)


def test_zoo_command_writes_a_checked_model(tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["zoo", "squeezenet1_1", "-o", str(out), "--no-fold-bn"]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert main(["zoo"]) == 0
    assert capsys.readouterr().out.splitlines()[-len(ZOO):] == list(ZOO)
    assert main(["zoo", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convtune zoo: 'nosuch' is not a zoo model") and "\n" not in err
