"""CUDA graphs: a model's launches captured once, replayed with one call.

Even a prepared launch costs a driver call from Python; a graph of a whole
model's launches (each ``PreparedCudaConv``, or operator's ``cuda_ops.DeviceOp``,
bound to the buffers it will run on) replays them all with one, which
measured 1.4 us a kernel against 40 us through numba's dispatcher. The
buffers are part of the graph: write new inputs into them
(``copy_to_device``) and replay. Needs a GPU: the simulator has no graphs.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

from convtune.codegen.cuda_launch import simulated


class Recordable(Protocol):
    def record(self, builder: Any) -> int:
        """Add its launches, on the buffers it is bound to, to a graph builder; how many."""


class CudaGraph:
    """``graph.replay()`` runs the captured launches, in order, on the stream."""

    def __init__(self, convs: Sequence[Recordable], stream: Any = None) -> None:
        if simulated():
            raise RuntimeError("cuda graph: CUDA graphs need a GPU (numba's simulator has none)")
        from cuda.core import Stream
        from numba import cuda

        self.numba_stream = stream if stream is not None else cuda.stream()
        _, handle = self.numba_stream.__cuda_stream__()
        self.stream = Stream.from_handle(handle)
        builder = self.stream.create_graph_builder().begin_building()
        self.launches = sum(conv.record(builder) for conv in convs)
        self.graph = builder.end_building().complete()
        self.graph.upload(self.stream)

    def replay(self) -> None:
        """Launch the graph (asynchronous on its stream)."""
        self.graph.launch(self.stream)

    def synchronize(self) -> None:
        self.numba_stream.synchronize()
