"""Cold compile time of the templates' own configs on random workloads.

Why: the tuner's throughput is bounded by compile time, and a config that
compiles for minutes stalls a whole tuning run (issue 9). This draws random
workloads (odd sizes and channel counts, every stride, padding, dilation,
grouping and epilogue, batch > 1), and for each a template that applies with
its default or a random valid config; every kernel is built cold (a fresh
``CONVTUNE_CACHE_DIR``), checked against the float64 reference and its build
time recorded, in the tuner's worker process (so a hang is killed at the
deadline). Run it on a quiet machine::

    python -m convtune.tuner.compile_bench --kernels 300 --json compile_times.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass

from convtune.ir.workload import ACTIVATIONS, Conv2D, WorkloadError, conv2d
from convtune.schedules.space import Config
from convtune.schedules.templates import BUILTIN, TEMPLATES
from convtune.schedules.target import host_target


def random_workload(rnd: random.Random) -> Conv2D:
    """A random valid conv2d: plain, grouped or depthwise (channel multiplier
    1 or 2), kernels 1..7 per side, strides and dilations 1..3, asymmetric
    padding, any epilogue, batch 1..3. Mostly small, so checking is quick.
    One in four is a pointwise conv (1x1, stride 1, unpadded), the most
    common layer of real models, which uniform draws would almost never
    make (and with it the templates and paths only 1x1s take)."""
    while True:
        kind = rnd.choice(("plain", "plain", "grouped", "depthwise"))
        groups = 1 if kind == "plain" else rnd.randint(2, 6) if kind == "depthwise" else rnd.randint(2, 4)
        cg = 1 if kind == "depthwise" else rnd.choice((1, 3, rnd.randint(1, 40)))
        kg = rnd.choice((1, 2)) if kind == "depthwise" else rnd.choice((1, 3, 17, 21, rnd.randint(1, 48)))
        if kind == "depthwise":
            groups = rnd.choice((groups, rnd.randint(7, 40)))
        pointwise = rnd.random() < 0.25
        kernel = (1, 1) if pointwise else (rnd.randint(1, 7), rnd.randint(1, 7))
        stride = (1, 1) if pointwise else (rnd.randint(1, 3), rnd.randint(1, 3))
        padding = (0, 0, 0, 0) if pointwise else tuple(rnd.randint(0, 3) for _ in range(4))
        try:
            return conv2d(
                rnd.randint(1, 3), cg * groups, rnd.randint(1, 31), rnd.randint(1, 31), kg * groups,
                *kernel, stride=stride, padding=padding, dilation=(rnd.randint(1, 3), rnd.randint(1, 3)),
                groups=groups, bias=rnd.random() < 0.5, residual=rnd.random() < 0.3,
                activation=rnd.choice((None, *ACTIVATIONS)))
        except WorkloadError:  # the kernel is larger than the padded input: draw again
            continue


def random_kernel(rnd: random.Random) -> tuple[Conv2D, Config]:
    """A random workload, a built-in template that applies to it, and that
    template's default config or (three times in four) a random valid one."""
    wl = random_workload(rnd)
    target = host_target()
    name = rnd.choice([n for n in BUILTIN if TEMPLATES[n].applies(wl)])
    space = TEMPLATES[name].space(wl, target)
    config = space.default if rnd.random() < 0.25 else space.sample(rnd)
    return wl, {"algorithm": name, **config}


@dataclass(frozen=True)
class Sample:
    workload: str
    config: Config
    compile_seconds: float
    error: str


def measure(count: int, seed: int, timeout: float) -> list[Sample]:
    """Build and check ``count`` random kernels cold, one at a time."""
    from convtune.tuner.measure import MeasureOptions, Measurer

    rnd = random.Random(seed)
    samples = []
    with Measurer(MeasureOptions(repeats=1, min_repeat_seconds=0.0, timeout=timeout)) as measurer:
        for i in range(count):
            wl, config = random_kernel(rnd)
            result = measurer.measure(wl.to_dict(), config)
            samples.append(Sample(wl.key, config, result.compile_seconds, result.error))
            status = result.error or "ok"
            print(f"{i + 1}/{count} {result.compile_seconds:6.2f} s  {wl.short()}  {config}  {status}", flush=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convtune.tuner.compile_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--kernels", type=int, default=300)
    ap.add_argument("--seed", type=int, default=None, help="default: a fresh one, printed")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a kernel may take to build and check")
    ap.add_argument("--json", default=None, help="write every sample here")
    args = ap.parse_args(argv)
    seed = random.SystemRandom().randrange(2**32) if args.seed is None else args.seed
    os.environ["CONVTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="convtune-cold-")  # the worker inherits it
    print(f"seed {seed}, cache {os.environ['CONVTUNE_CACHE_DIR']}, load {os.getloadavg()}", flush=True)
    samples = measure(args.kernels, seed, args.timeout)
    built = sorted(s.compile_seconds for s in samples if not s.error)
    failed = [s for s in samples if s.error]
    print(f"{len(built)} built and correct, {len(failed)} failed; load {os.getloadavg()}")
    if built:
        print(f"cold build seconds: median {statistics.median(built):.2f}, "
              f"90th percentile {built[int(0.9 * (len(built) - 1))]:.2f}, max {built[-1]:.2f}")
    for s in failed:
        print(f"FAILED {s.workload} {s.config}: {s.error}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": seed, "samples": [s.__dict__ for s in samples]}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
