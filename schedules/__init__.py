"""Schedules: primitives over an immutable state, layouts, and per-target templates."""
from schedules.schedule import Schedule, default_schedule
from schedules.state import ScheduleError

__all__ = ["Schedule", "ScheduleError", "default_schedule"]
