"""Tuning on the GPU (numba's CUDA simulator without one): ``--target cuda``
through the command line, records that name the GPU, candidates past the
device's limits recorded as failed, and one line where there is no GPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from convtune.codegen.cuda_build import cuda_target
from convtune.ir import conv2d
from convtune.schedules.target import CudaTarget, target_key
from convtune.schedules.templates import CUDA_TEMPLATES
from convtune.tuner import records
from convtune.tuner.cli import parse_conv
from convtune.tuner.dispatch import ApplyHistoryBest
from convtune.tuner.measure import MeasureOptions, measure_here
from convtune.tuner.records import ErrorCode, Record

TINY_CONV = "N=1,C=2,H=4,W=4,K=4,R=3,pad=1"


def convtune(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convtune.tuner.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


def test_tune_target_cuda_logs_records_of_this_gpu(tmp_path: Path):
    log = tmp_path / "cuda.jsonl"
    run = convtune("tune", "--target", "cuda", "--conv", TINY_CONV, "--trials", "2", "--repeats", "1", "--log",
                   str(log))
    assert run.returncode == 0, run.stderr
    recs = list(records.read(log))
    assert len(recs) == 2 and all(r.ok for r in recs)
    gpu = cuda_target()
    assert {r.target_key for r in recs} == {gpu.key}
    assert recs[0].target["name"] == gpu.name and recs[0].target["compute_capability"] == list(gpu.compute_capability)
    assert {r.config["algorithm"] for r in recs} <= set(CUDA_TEMPLATES)


def test_a_candidate_past_the_shared_memory_limit_is_recorded_as_failed():
    wl = conv2d(1, 8, 16, 40, 128, 5, padding=2)
    config = {"algorithm": "cuda_direct", "tile_f": "2x16x4", "tile_y": "1x4x2", "tile_x": "2x8x2", "tile_rc": 8,
              "tile_r": "5x5", "unroll": False, "shared": "both"}
    result = measure_here(wl.to_dict(), config, MeasureOptions(repeats=1, target="cuda"))
    assert result.error_code == ErrorCode.BUILD_ERROR
    assert "cache_read:" in result.error and "bytes of shared memory per block exceed" in result.error


def test_cuda_records_are_keyed_by_gpu_name_and_compute_capability():
    a = {"kind": "cuda", "name": "NVIDIA H100", "compute_capability": [9, 0]}
    assert target_key(a) != target_key(dict(a, compute_capability=[8, 0]))
    assert target_key(a) != target_key(dict(a, name="NVIDIA H200"))
    assert target_key(a) == target_key(dict(a, multiprocessors=132))


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has a GPU")
def test_no_gpu_and_no_simulator_says_so_in_one_line(tmp_path: Path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    run = convtune("tune", "--target", "cuda", "--conv", TINY_CONV, "--log", str(tmp_path / "x.jsonl"), env=env)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert "--target cuda: no CUDA GPU is available" in run.stderr


def test_tuned_gpu_configs_are_applied_only_on_that_gpu(tmp_path: Path):
    wl = parse_conv(TINY_CONV)
    gpu = cuda_target()
    config = {"algorithm": "cuda_gemm", "tile_k": "1x2x2", "tile_pq": "1x8x2", "split_k": 2, "tile_rc": 1,
              "unroll": False, "shared": "none"}
    other = dict(config, tile_pq="1x4x1")
    log = tmp_path / "gpu.jsonl"
    records.append(log, Record(wl.to_dict(), gpu.to_dict(), config, [2e-5]))
    records.append(log, Record(wl.to_dict(), CudaTarget("another GPU", gpu.compute_capability).to_dict(), other,
                               [1e-5]))
    best = ApplyHistoryBest(log, gpu)
    assert best.config_for(wl) == (config, "tuned")
    assert best.other_targets == 1
    assert len(best.kernel(wl).stages) == 2  # the split-K kernel, built for the GPU
