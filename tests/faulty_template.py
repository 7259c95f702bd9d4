"""A plugin template whose candidates misbehave on purpose (imported by the
measurement worker through MeasureOptions.plugins, like a user's template)."""
import ctypes
import time
from dataclasses import replace

from convtune.ir.workload import Activation
from convtune.schedules import default_schedule
from convtune.schedules.space import Knob, Space
from convtune.schedules.templates import TEMPLATES, Template

NAME = "faulty"
MODES = ("ok", "crash", "hang", "wrong", "raise")


def space(wl, target):
    return Space(NAME, (Knob("mode", MODES),), (), {"mode": "ok"})


def schedule(wl, config, target):
    mode = config["mode"]
    if mode == "crash":
        ctypes.string_at(0)  # segmentation fault
    if mode == "hang":
        time.sleep(3600)
    if mode == "raise":
        raise RuntimeError("a bug in the template")
    if mode == "wrong":  # same shapes, different function: relu clips the negative outputs
        return default_schedule(replace(wl, activation=Activation("relu")))
    return default_schedule(wl)


TEMPLATE = Template(NAME, lambda wl: True, space, schedule)
TEMPLATES[NAME] = TEMPLATE  # what importing a plugin does (the worker imports it through MeasureOptions.plugins)
