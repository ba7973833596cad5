"""A template from someone else cannot hang testbed or make it build gigabytes: loops
past the time bound, ``*``/``**`` past the size bounds and output past the size bound
are each one error naming the file (and line), exit 2, nothing run. Before the bounds
each of these rendered until the machine gave out."""

from __future__ import annotations

import time

import pytest

from testbed.cli import main as cli
from testbed.errors import ConfigError
from testbed.model import sandbox
from testbed.model.document import load_text

HEAD = "name: t\nnodes: {h1: {kind: host}, h2: {kind: host}}\nlinks:\n  - endpoints: [h1, h2]\n"


@pytest.mark.parametrize("body, says", [
    ('    delay: "{{ \'x\' * 10**9 }}ms"\n', "'*' would build 1,000,000,000 items"),
    ('    delay: "{{ ([1] * 100000) * 100000 }}ms"\n', "'*' would build"),
    ('    delay: "{{ 7 ** (10 ** 8) }}ms"\n', "'**' would build a number"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}# {{ i }} {{ j }}\n"
     "{% endfor %}{% endfor %}", "grew past"),
])
def test_a_template_building_too_much_is_one_error(body, says):
    with pytest.raises(ConfigError) as info:
        load_text(HEAD + body, "big.yaml")
    assert says in info.value.message and info.value.file == "big.yaml"


def test_a_template_looping_too_long_is_stopped(monkeypatch):
    monkeypatch.setattr(sandbox, "SECONDS", 0.5)
    monkeypatch.setattr(sandbox.render, "__defaults__", (0.5,))
    text = HEAD + ("{% for i in range(100000) %}{% for j in range(100000) %}"
                   "{% endfor %}{% endfor %}")
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_text(text, "slow.yaml")
    assert time.monotonic() - started < 5
    assert "took longer than 0.5 s" in info.value.message and info.value.line == 5


def test_the_cli_says_it_once_and_exits_2(tmp_path, capsys):
    f = tmp_path / "big.yaml"
    f.write_text(HEAD + '    delay: "{{ \'x\' * 10**9 }}ms"\n')
    assert cli.main(["plan", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{f}:" in err and "Traceback" not in err


def test_ordinary_arithmetic_still_works():
    doc = load_text(HEAD + '    delay: "{{ 2 ** 10 // 512 * 3 }}ms"\n'
                    "# {{ '-' * 40 }} {{ [0] * 3 }}\n", "ok.yaml")
    assert doc.data["links"][0]["delay"] == "6ms"


def test_a_timer_of_the_caller_is_given_back():
    import signal
    seen = []
    previous = signal.signal(signal.SIGALRM, lambda *_: seen.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        load_text(HEAD, "ok.yaml")
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
        time.sleep(0.5)
        assert seen == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
