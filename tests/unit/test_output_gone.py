"""A reader that goes away (``| head``, a closed terminal) stops testbed's printing, never
its work; SIGHUP stops a command the way SIGTERM does (no root needed)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest

from testbed.output import reader_gone, write_quietly
from testbed import signals
from testbed.run.progress import ProgressLine


@pytest.fixture
def closed_pipe():
    """A text stream on a pipe whose reader has gone."""
    r, w = os.pipe()
    stream = open(w, "w")
    os.close(r)
    yield stream
    stream.close()


def test_a_write_to_a_closed_pipe_silences_the_stream(closed_pipe):
    assert reader_gone(closed_pipe)
    assert write_quietly(closed_pipe, "progress\n") is False
    assert os.readlink(f"/proc/self/fd/{closed_pipe.fileno()}") == os.devnull
    closed_pipe.write("later\n")
    closed_pipe.flush()             # nothing fails again, Python's final flush included


def test_an_open_pipe_is_written():
    r, w = os.pipe()
    with open(w, "w") as stream, open(r) as reader:
        assert not reader_gone(stream)
        assert write_quietly(stream, "line\n") and write_quietly(stream, b"bytes\n")
        stream.close()
        assert reader.read() == "line\nbytes\n"


def test_progress_stops_printing_when_its_reader_goes(closed_pipe):
    line = ProgressLine(True, [5.0], stream=closed_pipe)
    line.begin_point(0, "wl a=1")
    line.show(1.0, 0.5, {"bulk": 1e6}, 1)
    line.message("tearing down")
    assert line.enabled is False


def test_progress_on_a_stream_without_a_descriptor_also_survives():
    class Broken(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")
    line = ProgressLine(True, [5.0], stream=Broken())
    line.message("x")
    assert line.enabled is False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_unwind_a_change_with_their_number(sig):
    with pytest.raises(signals.Terminated) as exc:
        with signals.stop_signals_raise():
            os.kill(os.getpid(), sig)
            signal.sigtimedwait([], 0.5)
    assert exc.value.signum == sig


def test_a_sighup_during_rollback_is_held_then_raised():
    with pytest.raises(signals.Terminated) as exc:
        with signals.signals_deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            signal.sigtimedwait([], 0.2)
            held = True
    assert held and exc.value.signum == signal.SIGHUP


def test_a_closed_stdout_ends_the_cli_quietly():
    """Output nobody reads: exit 141 (as after SIGPIPE), no traceback, no death by signal."""
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGPIPE and err == b""
