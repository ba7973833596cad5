"""A template that fails while rendering (a value of the wrong type, a division by
zero) is one ConfigError with file:line and the values involved, never a traceback."""

from pathlib import Path

import pytest

from testbed.cli import main as cli
from testbed.errors import ConfigError
from testbed.model.document import load_text
from testbed.workload import load_source

LINE = Path(__file__).resolve().parents[2] / "topologies" / "line.yaml"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_type_error_in_the_template_is_one_message_with_line_and_values(capsys):
    code, err = run_cli(capsys, "plan", str(LINE), "--set", "routers=abc")
    assert code == 2
    assert "Traceback" not in err and err.count("\n") == 1
    assert f"{LINE}:17:" in err                      # {% for i in range(1, routers + 1) %}
    assert "routers='abc'" in err and "TypeError" in err


def test_number_values_are_numbers(capsys):
    code, _ = run_cli(capsys, "plan", str(LINE), "--set", "routers=2")
    assert code == 0


def test_arithmetic_error_carries_the_line():
    text = "variables:\n  n: 0\n---\na: 1\nb: {{ 10 // n }}\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, "f.yaml")
    assert info.value.line == 5 and "n=0 (default)" in info.value.message


def test_workload_header_type_error_is_a_config_error(tmp_path):
    wl = tmp_path / "wl.yaml"
    wl.write_text("variables:\n  n: abc\n---\ntopology: t.yaml\nrepeat: {{ n + 1 }}\n"
                  "flows: [{from: h1, to: h2}]\n")
    with pytest.raises(ConfigError) as info:
        load_source(wl)
    assert info.value.line == 5 and info.value.file == str(wl)


def test_a_constant_too_long_to_print_is_one_error(tmp_path, capsys):
    """jinja2 compiles {{ 2**20000 }} to Python text: that failed with a traceback (exit 1)
    while `plan` looked for the variables the file uses, before any render."""
    f = tmp_path / "big.yaml"
    f.write_text("name: big\nnodes: {h1: {kind: host}, h2: {kind: host}}\n"
                 "links:\n  - endpoints: [h1, h2]\n    delay: \"{{ 2**20000 }}ms\"\n")
    assert cli.main(["plan", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:5: template: ValueError" in err and "Traceback" not in err
