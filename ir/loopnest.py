"""The loop-nest IR: what lowering produces, passes rewrite and renderers consume.

Statements are immutable. A kernel is a ``Kernel`` (parameters plus a body);
``print(kernel)`` shows it as indented pseudo-code at any stage of lowering.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable

from convtune.ir.expr import Expr, loads


class LoopKind(str, Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"
    UNROLLED = "unrolled"
    VECTORIZED = "vectorized"
    # GPU bindings (``schedules.gpu.bind``): the loop is not a loop but the
    # block's or the thread's index along one launch dimension.
    BLOCK_X = "blockIdx.x"
    BLOCK_Y = "blockIdx.y"
    BLOCK_Z = "blockIdx.z"
    THREAD_X = "threadIdx.x"
    THREAD_Y = "threadIdx.y"
    THREAD_Z = "threadIdx.z"

    @property
    def is_gpu(self) -> bool:
        """A block or thread index rather than a loop."""
        return "Idx." in self.value


@dataclass(frozen=True)
class Buffer:
    """A float32 array. ``scope`` is 'global' (a kernel argument, or scratch
    the kernel wrapper allocates once), 'local' (per-tile storage that the
    register pass may turn into variables) or 'shared' (a GPU block's
    shared memory, filled cooperatively by its threads)."""

    name: str
    shape: tuple[int, ...]
    scope: str = "global"

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def strides(self) -> tuple[int, ...]:
        out = []
        acc = 1
        for d in reversed(self.shape):
            out.append(acc)
            acc *= d
        return tuple(reversed(out))


class Stmt:
    def __str__(self) -> str:
        from convtune.ir.printer import stmt_str

        return stmt_str(self)


@dataclass(frozen=True)
class For(Stmt):
    var: str
    extent: int
    kind: LoopKind
    body: Stmt


@dataclass(frozen=True)
class Seq(Stmt):
    stmts: tuple[Stmt, ...]


@dataclass(frozen=True)
class Store(Stmt):
    buffer: str
    indices: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True)
class IfThen(Stmt):
    cond: Expr
    body: Stmt
    orelse: Stmt | None = None


@dataclass(frozen=True)
class Allocate(Stmt):
    """Local scratch live for the duration of ``body``."""

    buffer: Buffer
    body: Stmt


@dataclass(frozen=True)
class Assign(Stmt):
    """``var = value`` for a register variable (made by the register pass)."""

    var: str
    value: Expr


@dataclass(frozen=True)
class Barrier(Stmt):
    """Every thread of a GPU block waits here until all have arrived (so a
    shared-memory tile is complete before it is read, and read before it is
    overwritten)."""


@dataclass(frozen=True)
class Prefetch(Stmt):
    """A hint that ``buffer[indices]`` will be read soon: its cache line is
    fetched ahead (made by the prefetch pass; it never faults, so it needs no
    bounds)."""

    buffer: str
    indices: tuple[Expr, ...]


@dataclass(frozen=True)
class Comment(Stmt):
    text: str


@dataclass(frozen=True)
class Kernel:
    """A lowered kernel: named buffers in argument order and its stages.

    Stages run one after another (pack, compute, transform, ...), each its own
    function with its own parallel loop. They are kept apart explicitly:
    a pass may turn a stage into a sequence of statements (inlining a
    one-iteration loop, say) and that must not split it into several."""

    name: str
    params: tuple[Buffer, ...]
    stages: tuple[Stmt, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def body(self) -> Stmt:
        """All stages as one statement (for printing and walking)."""
        return Seq(self.stages)

    def map_stages(self, fn: Callable[[Stmt], Stmt | None]) -> Kernel:
        """Each stage rewritten by ``fn`` on its own; a stage ``fn`` maps to
        None (one that does nothing) is dropped."""
        return replace(self, stages=tuple(x for x in (fn(st) for st in self.stages) if x is not None))

    def __str__(self) -> str:
        from convtune.ir.printer import kernel_str

        return kernel_str(self)


def seq(*stmts: Stmt) -> Stmt:
    """A flattened sequence; single statements are returned as they are."""
    flat: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Seq):
            flat.extend(s.stmts)
        else:
            flat.append(s)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def map_stmt(s: Stmt, fn: Callable[[Stmt], Stmt | None]) -> Stmt:
    """Bottom-up rewrite: children first, then ``fn`` (None keeps the node)."""
    if isinstance(s, For):
        s = replace(s, body=map_stmt(s.body, fn))
    elif isinstance(s, Seq):
        s = seq(*(map_stmt(x, fn) for x in s.stmts))
    elif isinstance(s, IfThen):
        s = replace(s, body=map_stmt(s.body, fn),
                    orelse=None if s.orelse is None else map_stmt(s.orelse, fn))
    elif isinstance(s, Allocate):
        s = replace(s, body=map_stmt(s.body, fn))
    out = fn(s)
    return s if out is None else out


def walk(s: Stmt) -> list[Stmt]:
    """All statements, pre-order."""
    out = [s]
    if isinstance(s, (For, IfThen, Allocate)):
        out.extend(walk(s.body))
    if isinstance(s, IfThen) and s.orelse is not None:
        out.extend(walk(s.orelse))
    elif isinstance(s, Seq):
        for x in s.stmts:
            out.extend(walk(x))
    return out


def accesses(body: Stmt, name: str) -> tuple[list[Expr], list[Expr]]:
    """Flat offsets of the loads and stores of buffer ``name`` in ``body``."""
    reads: list[Expr] = []
    writes: list[Expr] = []

    def exprs(e: Expr) -> None:
        reads.extend(ld.indices[0] for ld in loads(e) if ld.buffer == name)

    for s in walk(body):
        if isinstance(s, Store):
            if s.buffer == name:
                writes.append(s.indices[0])
            for e in s.indices + (s.value,):
                exprs(e)
        elif isinstance(s, IfThen):
            exprs(s.cond)
        elif isinstance(s, Assign):
            exprs(s.value)
    return reads, writes
