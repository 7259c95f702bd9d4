"""The Ctrl-C gate: held between measurements, raised inside them."""
import os
import signal
import threading

import pytest

from convtune.tuner.interrupts import CtrlCGate


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_a_held_ctrl_c_is_raised_when_the_block_ends_not_inside_it():
    gate, reached = CtrlCGate(), []
    with pytest.raises(KeyboardInterrupt):
        with gate.held():
            ctrl_c()
            reached.append("after the signal")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_held_earlier_is_raised_on_entering_an_allowed_block():
    gate, reached = CtrlCGate(), []
    with pytest.raises(KeyboardInterrupt):
        with gate.held():
            ctrl_c()
            with gate.allowed():
                reached.append("measured")
    assert reached == []


def test_inside_an_allowed_block_ctrl_c_interrupts_at_once_and_holding_resumes_after():
    gate, reached = CtrlCGate(), []
    with gate.held():
        with pytest.raises(KeyboardInterrupt):
            with gate.allowed():
                ctrl_c()
                reached.append("not reached")
        reached.append("bookkeeping")
    assert reached == ["bookkeeping"]


def test_the_gate_is_a_no_op_off_the_main_thread_where_handlers_cannot_be_set():
    errors = []

    def run():
        try:
            gate = CtrlCGate()
            with gate.held(), gate.allowed():
                pass
        except Exception as e:  # noqa: BLE001 - reported to the test below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors == []
