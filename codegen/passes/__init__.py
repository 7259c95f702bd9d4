"""Loop-nest rewrites run between lowering and rendering, each in its own module."""
