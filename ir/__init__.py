"""The mini tensor IR: workloads (conv2d, conv2d_transpose), the conv2d compute definition, expressions and the loop-nest IR."""
from convtune.ir.compute import REDUCE, SPATIAL, Axis, ComputeDef
from convtune.ir.loopnest import Buffer, Kernel, LoopKind
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.reference_transpose import conv2d_transpose_reference
from convtune.ir.workload import Activation, Conv2D, WorkloadError, conv2d
from convtune.ir.workload_transpose import ConvTranspose2D, conv2d_transpose

__all__ = [
    "Activation", "Axis", "Buffer", "ComputeDef", "Conv2D", "ConvTranspose2D", "Kernel", "LoopKind", "REDUCE",
    "SPATIAL", "WorkloadError", "conv2d", "conv2d_reference", "conv2d_transpose", "conv2d_transpose_reference",
    "relative_error",
]
