"""Running CUDA kernels: weights on the device once, launches prepared once.

numba.cuda's dispatcher costs 39-99 us a launch from Python (type checks and
argument marshalling each call). A ``Launch`` marshals its arguments once
and then calls the compiled function directly through cuda.core's ``launch``;
``PreparedCudaConv`` keeps the prepared launches of the last buffers it ran
on, so calls on the same device tensors pay only the driver call. Under
numba's CUDA simulator there is no driver: a launch goes through the
simulator's dispatcher.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from convtune.codegen.kernel import host_operands
from convtune.ir.loopnest import Kernel as LoopNest
from convtune.schedules.state import ScheduleState
from convtune.schedules.target import CudaTarget

OPERANDS = ("data", "weight", "bias", "residual", "out")
"""Kernel parameters supplied by the caller; any other is scratch."""


def simulated() -> bool:
    """Whether numba.cuda is the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba.cuda.core import config

    return bool(config.ENABLE_CUDASIM)


def device_array(x: object) -> Any | None:
    """The device array behind ``x`` (a numba device array or any
    ``__cuda_array_interface__`` object such as a torch tensor), or None for
    host data."""
    from numba import cuda

    if simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return x if isinstance(x, FakeCUDAArray) else None
    return cuda.as_cuda_array(x) if cuda.is_cuda_array(x) else None


@dataclass(frozen=True)
class CudaStage:
    dispatcher: Any
    """The compiled ``@cuda.jit`` kernel (one signature: flat float32 arrays)."""
    grid: tuple[int, int, int]
    block: tuple[int, int, int]


class Launch:
    """One stage on fixed device buffers, its arguments marshalled once."""

    def __init__(self, stage: CudaStage, args: tuple[Any, ...], stream: Any) -> None:
        self._call: Callable[[], Any]
        if simulated():  # the simulator's kernel[grid, block] configures the kernel itself: at each call
            self._call = lambda: stage.dispatcher[stage.grid, stage.block, stream](*args)
            return
        from cuda.core import LaunchConfig, launch

        kernel = next(iter(stage.dispatcher.overloads.values()))
        kernel.bind()
        marshalled: list[Any] = []
        for ty, value in zip(kernel.argument_types, args):
            kernel._prepare_args(ty, value, stream, [], marshalled)
        config = LaunchConfig(grid=stage.grid, block=stage.block, shmem_size=0)
        self._call = functools.partial(launch, stream, config, kernel._codelibrary.get_cufunc().kernel, *marshalled)

    def __call__(self) -> None:
        self._call()


@dataclass
class CudaKernel:
    """A conv2d schedule compiled for the GPU: ``prepare(weight, bias)``
    puts the weights on the device once; ``kernel(data, weight, ...)`` does
    everything in one call."""

    state: ScheduleState
    loop_nest: LoopNest
    source: str
    stages: tuple[CudaStage, ...]
    compile_seconds: float
    target: CudaTarget

    @property
    def workload(self):  # type: ignore[no-untyped-def]
        return self.state.compute.workload

    def prepare(self, weight: object, bias: object = None, stream: Any = None) -> PreparedCudaConv:
        return PreparedCudaConv(self, *host_operands(self.state, self.loop_nest, weight, bias), stream=stream)

    def __call__(self, data: object, weight: object, bias: object = None, residual: object = None,
                 out: object = None) -> Any:
        return self.prepare(weight, bias)(data, residual=residual, out=out)


def _operand(name: str, x: object, shape: tuple[int, ...]) -> Any:
    """A flat float32 device view of a caller's device array, checked."""
    arr = device_array(x)
    if arr is None:
        raise ValueError(f"{name}: expected a device array, got {type(x).__name__}")
    if tuple(arr.shape) != shape or np.dtype(arr.dtype) != np.float32 or not arr.is_c_contiguous():
        raise ValueError(f"{name}: expected a C-contiguous float32 device array of shape {shape}, "
                         f"got {np.dtype(arr.dtype)} {tuple(arr.shape)}")
    return arr.reshape(-1)


class PreparedCudaConv:
    """``conv(data, residual=None, out=None)`` on the GPU.

    Host (numpy) data is copied to the device, computed and copied back (the
    copies are outside the kernels: time ``launch()`` to time the kernels).
    Device data (numba device arrays, torch tensors) is used in place and the
    result is a device array; ``out`` may name where it goes.
    """

    def __init__(self, kernel: CudaKernel, weight: np.ndarray, bias: np.ndarray | None, stream: Any = None) -> None:
        from numba import cuda

        self.kernel = kernel
        self.stream = stream if stream is not None else cuda.default_stream()
        self._buffers: dict[str, Any] = {"weight": cuda.to_device(weight)}
        if bias is not None:
            self._buffers["bias"] = cuda.to_device(bias)
        for b in kernel.loop_nest.params:
            if b.name not in OPERANDS:
                self._buffers[b.name] = cuda.device_array(b.size, np.float32)
        self._host: dict[str, Any] = {}
        self._args: tuple[Any, ...] = ()
        self._prepared: tuple[tuple[int, ...] | None, tuple[Launch, ...]] | None = None

    def _host_buffer(self, name: str, shape: tuple[int, ...]) -> Any:
        from numba import cuda

        if name not in self._host:
            self._host[name] = cuda.device_array(shape, np.float32)
        return self._host[name]

    def __call__(self, data: object, residual: object = None, out: object = None) -> Any:
        wl = self.kernel.workload
        if wl.residual and residual is None:
            raise ValueError(f"residual: this workload adds a residual; pass one of shape {wl.out_shape}")
        if not wl.residual and residual is not None:
            raise ValueError("residual: this workload was declared without a residual (conv2d(..., residual=True))")
        if device_array(data) is not None:
            from numba import cuda

            dev_out = out if out is not None else cuda.device_array(wl.out_shape, np.float32)
            self.bind(data, residual, dev_out)
            self.launch()
            return dev_out
        given = {"data": (data, wl.data_shape), "residual": (residual, wl.out_shape)}
        for name, (x, shape) in given.items():
            if x is not None:
                host = np.ascontiguousarray(x, dtype=np.float32)
                if host.shape != shape:
                    raise ValueError(f"{name}: expected shape {shape}, got {host.shape}")
                self._host_buffer(name, shape).copy_to_device(host, stream=self.stream)
        dev = {name: self._host[name] if x is not None else None for name, (x, _) in given.items()}
        self.bind(dev["data"], dev["residual"], self._host_buffer("out", wl.out_shape))
        self.launch()
        result = self._host["out"].copy_to_host(stream=self.stream)
        self.stream.synchronize()
        if out is None:
            return result
        if not (isinstance(out, np.ndarray) and out.shape == wl.out_shape and out.dtype == np.float32):
            raise ValueError(f"out: expected a float32 array of shape {wl.out_shape}")
        out[...] = result
        return out

    def bind(self, data: object, residual: object, out: object) -> None:
        """Prepare the launches on these device buffers (kept while the same
        buffers come back: the marshalling is done once)."""
        wl = self.kernel.workload
        args = dict(self._buffers, data=_operand("data", data, wl.data_shape),
                    out=_operand("out", out, wl.out_shape))
        if residual is not None:
            args["residual"] = _operand("residual", residual, wl.out_shape)
        key = None if simulated() else tuple(
            args[n].device_ctypes_pointer.value for n in ("data", "residual", "out") if n in args)
        if key is None or self._prepared is None or self._prepared[0] != key:
            self._args = tuple(args[b.name] for b in self.kernel.loop_nest.params)
            self._prepared = key, tuple(Launch(s, self._args, self.stream) for s in self.kernel.stages)

    @property
    def arguments(self) -> tuple[Any, ...]:
        """The kernel's flat device arguments of the last ``bind``, in parameter order."""
        return self._args

    def record(self, builder: Any) -> int:
        """Add the launches on the last ``bind``'s buffers to a cuda.core graph
        builder (``codegen.cuda_graph``); how many."""
        if self._prepared is None:
            raise ValueError("record: bind device buffers first (or call the conv)")
        for stage in self.kernel.stages:
            Launch(stage, self._args, builder)()
        return len(self.kernel.stages)

    def launch(self) -> None:
        """Run the stages on the buffers of the last ``bind`` (asynchronous on the stream)."""
        if self._prepared is None:
            raise ValueError("launch: bind device buffers first (or call the conv)")
        for launch in self._prepared[1]:
            launch()
