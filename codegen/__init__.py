"""Code generation: lowering, loop-nest passes, the Numba renderer and the kernel cache."""
from convtune.codegen.build import build, lower_schedule, source
from convtune.codegen.kernel import CompiledKernel, PreparedConv

__all__ = ["CompiledKernel", "PreparedConv", "build", "lower_schedule", "source"]
