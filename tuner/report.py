"""``convtune report LOG -o DIR``: plots of a tuning log.

- ``tuning_curves.png``: best-so-far GFLOP/s against trial number, one line
  per workload (failed trials count as trials): where tuning still pays.
- ``layers.png``: each workload's best GFLOP/s as a bar against the
  machine's FMA ceiling, measured now on the cores the kernels use.
Only records of this machine's target are plotted: another CPU's speeds
say nothing about this one's ceiling.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from convtune.schedules.target import host_target
from convtune.tuner import records
from convtune.tuner.records import Record


def _by_workload(log: str | Path) -> dict[str, list[Record]]:
    here = host_target().key
    out: dict[str, list[Record]] = {}
    for rec in records.read(log):
        if rec.target_key == here:
            out.setdefault(rec.workload_obj.short(), []).append(rec)
    return out


def best_so_far(recs: list[Record]) -> list[float]:
    """GFLOP/s of the best config measured up to each trial, in log order."""
    best, out = 0.0, []
    for rec in recs:
        best = max(best, rec.gflops)
        out.append(best)
    return out


def write_report(log: str | Path, out_dir: str | Path, fma_gflops: Optional[float] = None) -> list[Path]:
    """Write the PNGs (names above) to ``out_dir``; ``fma_gflops`` replaces
    the measured ceiling. Raises ValueError for a log with nothing of this
    machine in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convtune.tuner.ceilings import fma_ceiling

    runs = _by_workload(log)
    if not runs:
        raise ValueError(f"{log}: no record of this machine ({host_target().cpu}) to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = host_target().cores
    ceiling = fma_gflops or fma_ceiling(threads)
    names = sorted(runs, key=lambda n: -max(r.gflops for r in runs[n]))

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name in names:
        curve = best_so_far(runs[name])
        ax.plot(range(1, len(curve) + 1), curve, label=name, linewidth=1.2)
    ax.axhline(ceiling, color="black", linestyle="--", linewidth=1, label=f"FMA ceiling ({ceiling:.0f})")
    ax.set(xlabel="trial", ylabel="best GFLOP/s so far", title=f"{Path(log).name}: tuning progress per workload")
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    curves = out / "tuning_curves.png"
    fig.tight_layout()
    fig.savefig(curves, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.28 * len(names) + 1.5)))
    best = [max(r.gflops for r in runs[n]) for n in names]
    ax.barh(range(len(names)), best, color="tab:blue")
    ax.axvline(ceiling, color="black", linestyle="--", linewidth=1, label=f"FMA ceiling, {threads} threads")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="best GFLOP/s", title=f"{Path(log).name}: best per layer ({100 * min(best) / ceiling:.0f}-"
                                          f"{100 * max(best) / ceiling:.0f}% of the FMA ceiling)")
    ax.legend(fontsize=7)
    bars = out / "layers.png"
    fig.tight_layout()
    fig.savefig(bars, dpi=120)
    plt.close(fig)
    return [curves, bars]
