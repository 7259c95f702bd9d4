"""Immutable schedule state: the loop axes, how they derive from the compute's
axes, their order and annotations, and the layout decisions.

Primitives (``schedules.primitives``) are functions from a state to a new
state; nothing here knows about code generation.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from convtune.ir.compute import REDUCE, SPATIAL, ComputeDef
from convtune.ir.expr import Cmp, Const, Expr, Var
from convtune.ir.loopnest import LoopKind


class ScheduleError(ValueError):
    """An illegal schedule; the message starts with the primitive's name."""


@dataclass(frozen=True)
class IterVar:
    """A loop axis. ``kind`` is SPATIAL or REDUCE (inherited through splits)."""

    name: str
    extent: int
    kind: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Split:
    parent: str
    outer: str
    inner: str
    factor: int


@dataclass(frozen=True)
class Fuse:
    outer: str
    inner: str
    fused: str


@dataclass(frozen=True)
class DataPacking:
    """Input copied per call into zero-padded scratch: NCHW[block]c, or with
    ``im2col`` the input pixels of every kernel tap laid out per output pixel,
    [n, c/block, r, s, p*Q + q, block], so the compute is a plain GEMM over
    output pixels (for a 1x1 kernel this only blocks and subsamples)."""

    block: int
    im2col: bool = False


@dataclass(frozen=True)
class WeightPacking:
    """Weights packed once, at prepare time, to OIHW[in_block]i[out_block]o."""

    in_block: int
    out_block: int


@dataclass(frozen=True)
class BlockedLayout:
    """An activation tensor kept in NCHW[block]c inside a zero border, so
    consecutive convs need no NCHW packing or unpacking between them.

    Logical element (n, c, h, w) of a ``tensor`` of shape (N, C, H, W) lives
    at [n, c // block, top + h, left + w, c % block] of an array of shape
    (N, ceil(C / block), rows, cols, block); every other element is zero.
    The border is the consuming conv's zero padding plus whatever rows and
    columns its tiles read past the edge (``codegen.lower.input_layout_wanted``
    says which), so a kernel reading this layout skips its packing stage; a
    kernel writing it writes the interior only and leaves the border zero.
    """

    tensor: tuple[int, int, int, int]
    block: int
    top: int = 0
    left: int = 0
    rows: int = 0
    """Physical rows; 0 means ``top + H`` (no border below)."""
    cols: int = 0
    """Physical columns; 0 means ``left + W``."""

    def __post_init__(self) -> None:
        n, c, h, w = self.tensor
        object.__setattr__(self, "rows", self.rows or self.top + h)
        object.__setattr__(self, "cols", self.cols or self.left + w)
        if min(n, c, h, w, self.block) < 1 or min(self.top, self.left) < 0:
            raise ScheduleError(f"layout: tensor {self.tensor}, block {self.block} and border "
                                f"({self.top}, {self.left}) must be positive (border: non-negative)")
        if self.rows < self.top + h or self.cols < self.left + w:
            raise ScheduleError(f"layout: {self.rows} x {self.cols} physical rows x columns cannot hold "
                                f"{h} x {w} from ({self.top}, {self.left})")

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        n, c, _, _ = self.tensor
        return (n, -(-c // self.block), self.rows, self.cols, self.block)

    def __str__(self) -> str:
        return f"NCHW{self.block}c{list(self.shape)} at ({self.top}, {self.left})"


@dataclass(frozen=True)
class SharedRead:
    """A GPU block stages the part of ``buffer`` ('data' or 'weight') that one
    iteration of the loop ``at`` reads in shared memory: its threads load it
    together at the start of each iteration (see ``schedules.gpu``)."""

    buffer: str
    at: str


@dataclass(frozen=True)
class SoftwarePrefetch:
    """At the top of each iteration of the loop ``at``, fetch into cache what
    that iteration will read of ``buffer`` in the stage's parallel chunk
    ``ahead`` chunks later (see ``codegen.passes.prefetch``)."""

    buffer: str
    at: str
    ahead: int


@dataclass(frozen=True)
class ScheduleState:
    compute: ComputeDef
    axes: tuple[IterVar, ...]
    """Every axis ever created (roots first), looked up by name."""
    leaves: tuple[str, ...]
    """The current loop order, outermost first."""
    relations: tuple[Split | Fuse, ...] = ()
    annotations: tuple[tuple[str, LoopKind], ...] = ()
    cache_at: Optional[str] = None
    data_packing: Optional[DataPacking] = None
    weight_packing: Optional[WeightPacking] = None
    shared_reads: tuple[SharedRead, ...] = ()
    prefetches: tuple[SoftwarePrefetch, ...] = ()
    io_layouts: tuple[tuple[str, BlockedLayout], ...] = ()
    """Kernel arguments ('data', 'out', 'residual') given in a blocked
    layout instead of NCHW (``primitives.io_layout``)."""
    trace: tuple[str, ...] = field(default=())

    @staticmethod
    def initial(compute: ComputeDef) -> ScheduleState:
        axes = tuple(IterVar(a.name, a.extent, a.kind) for a in compute.axes)
        return ScheduleState(compute, axes, tuple(a.name for a in axes))

    def axis(self, name: str) -> IterVar:
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)

    def has_axis(self, name: str) -> bool:
        return any(a.name == name for a in self.axes)

    def leaf_axes(self) -> list[IterVar]:
        return [self.axis(n) for n in self.leaves]

    def annotation(self, name: str) -> LoopKind:
        return dict(self.annotations).get(name, LoopKind.SERIAL)

    def io_layout(self, buffer: str) -> Optional[BlockedLayout]:
        """The blocked layout of kernel argument ``buffer``, None for NCHW."""
        return dict(self.io_layouts).get(buffer)

    def annotated(self, kind: LoopKind) -> list[str]:
        return [n for n, k in self.annotations if k == kind]

    def gpu_bound(self) -> list[str]:
        """Loops bound to a block or thread index, outermost first."""
        bound = {n for n, k in self.annotations if k.is_gpu}
        return [n for n in self.leaves if n in bound]

    def fresh_name(self, base: str) -> str:
        name, i = base, 1
        while self.has_axis(name):
            i += 1
            name = f"{base}{i}"
        return name

    def with_(self, record: str, **changes: object) -> ScheduleState:
        return replace(self, trace=self.trace + (record,), **changes)  # type: ignore[arg-type]

    def root_exprs(self) -> dict[str, Expr]:
        """Each axis (root or intermediate) as an expression over leaf variables."""
        exprs: dict[str, Expr] = {n: Var(n) for n in self.leaves}
        for rel in reversed(self.relations):
            if isinstance(rel, Split):
                exprs[rel.parent] = exprs[rel.outer] * rel.factor + exprs[rel.inner]
            else:
                inner_extent = self.axis(rel.inner).extent
                exprs[rel.outer] = exprs[rel.fused] // inner_extent
                exprs[rel.inner] = exprs[rel.fused] % inner_extent
        return exprs

    def roots_of(self, name: str) -> frozenset[str]:
        """The compute axes an axis is derived from."""
        for rel in self.relations:
            if isinstance(rel, Split) and name in (rel.outer, rel.inner):
                return self.roots_of(rel.parent)
            if isinstance(rel, Fuse) and name == rel.fused:
                return self.roots_of(rel.outer) | self.roots_of(rel.inner)
        return frozenset({name})

    def overhang(self) -> list[tuple[frozenset[str], str, Expr]]:
        """(compute axes concerned, kind, condition) for every split that does
        not divide its parent: iterations past the parent's extent must not
        take effect."""
        exprs = self.root_exprs()
        out = []
        for rel in self.relations:
            if isinstance(rel, Split):
                parent = self.axis(rel.parent)
                if parent.extent % rel.factor:
                    out.append((self.roots_of(rel.parent), parent.kind,
                                Cmp("<", exprs[rel.parent], Const(parent.extent))))
        return out

    def reduction_overhang_aliases(self) -> bool:
        """Whether a reduction split that does not divide its parent runs onto
        indices inside the tensor: splitting an inner axis (``c_i`` of extent
        5 by 2 reaches ``c_i = 5``, which is ``c = 5`` of the next ``c_o``
        block, counted twice), where the zeros past a packed tensor's end do
        not make the overhang harmless and only a guard does."""
        return any(isinstance(rel, Split) and self.axis(rel.parent).extent % rel.factor
                   and self.axis(rel.parent).kind == REDUCE and not self._overruns_its_root(rel.parent)
                   for rel in self.relations)

    def _overruns_its_root(self, name: str) -> bool:
        """Whether values of axis ``name`` past its extent are past its root
        axis's extent too: a root, a split's outer part, a fused axis's
        outer part, and nothing else."""
        for rel in self.relations:
            if isinstance(rel, Split) and name == rel.inner:
                return False
            if isinstance(rel, Split) and name == rel.outer:
                return self._overruns_its_root(rel.parent)
            if isinstance(rel, Fuse) and name == rel.fused:
                return self._overruns_its_root(rel.outer)
        return True

    def spatial_leaves(self) -> list[IterVar]:
        return [a for a in self.leaf_axes() if a.kind == SPATIAL]

    def reduce_leaves(self) -> list[IterVar]:
        return [a for a in self.leaf_axes() if a.kind == REDUCE]
