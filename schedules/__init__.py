"""Schedules: primitives over an immutable state, layouts, and per-target templates."""
from convtune.schedules.schedule import Schedule, default_schedule
from convtune.schedules.state import ScheduleError

__all__ = ["Schedule", "ScheduleError", "default_schedule"]
