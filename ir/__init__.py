"""The mini tensor IR: workloads, the conv2d compute definition, expressions and the loop-nest IR."""
from convtune.ir.compute import REDUCE, SPATIAL, Axis, ComputeDef
from convtune.ir.loopnest import Buffer, Kernel, LoopKind
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.workload import Activation, Conv2D, WorkloadError, conv2d

__all__ = [
    "Activation", "Axis", "Buffer", "ComputeDef", "Conv2D", "Kernel", "LoopKind", "REDUCE", "SPATIAL",
    "WorkloadError", "conv2d", "conv2d_reference", "relative_error",
]
