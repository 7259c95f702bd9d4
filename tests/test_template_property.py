"""Property: every config a template's space allows builds a correct kernel.

Workloads are drawn as a new user's would come (odd sizes and channel counts,
every stride, padding, dilation and grouping, any epilogue, batch > 1); for
each, a template that applies is checked with its default and a random valid
config against the float64 reference, on a NaN-poisoned output. The draws
are fresh every run (the project's Hypothesis profile); a failure prints the
blob that replays it. Compile time is bounded by the spaces' code-size
constraint, measured outside the suite (``python -m convtune.tuner.compile_bench``).
"""
import os

from hypothesis import given, note, settings
from hypothesis import strategies as st

from conftest import assert_correct
from convtune.codegen import source
from convtune.schedules.target import host_target
from convtune.schedules.templates import BUILTIN, TEMPLATES, schedule_from_config, search_space
from convtune.tuner.compile_bench import random_workload

EXAMPLES = int(os.environ.get("CONVTUNE_TEMPLATE_EXAMPLES", "12"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(rnd=st.randoms(use_true_random=False))
def test_default_and_random_configs_of_a_template_are_correct(rnd):
    wl = random_workload(rnd)
    applicable = [n for n in BUILTIN if TEMPLATES[n].applies(wl)]
    assert applicable, f"no template applies to {wl.short()}"
    name = rnd.choice(applicable)
    space = TEMPLATES[name].space(wl, host_target())
    for config in (space.default, space.sample(rnd)):
        config = {"algorithm": name, **config}
        note(f"{wl.short()} ({wl.key}) with {config}")
        assert_correct(schedule_from_config(wl, config))


@settings(max_examples=4 * EXAMPLES, deadline=None)
@given(rnd=st.randoms(use_true_random=False))
def test_every_template_that_applies_lowers_its_default_and_a_random_config(rnd):
    """Without compiling (so many more draws): each template that applies
    has a valid default (a Space checks it when built), and its default and a
    random valid config schedule, lower through every pass (bounds proved)
    and render."""
    wl = random_workload(rnd)
    # Only the built-in templates: a plugin registered by another test (the
    # deliberately crashing one of test_measure_safety) is not ours to check.
    spaces = {name: space for name, space in search_space(wl).items() if name in BUILTIN}
    assert spaces, f"no template applies to {wl.short()}"
    for name, space in spaces.items():
        for config in (space.default, space.sample(rnd)):
            config = {"algorithm": name, **config}
            note(f"{wl.short()} ({wl.key}) with {config}")
            assert "def stage0(" in source(schedule_from_config(wl, config))
