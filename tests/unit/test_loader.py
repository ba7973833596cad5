import pytest
import yaml

from testbed.errors import ConfigError
from testbed.model.document import load_text, parse_assignment, parse_yaml


def test_file_variables_are_defaults_and_set_overrides():
    text = "variables:\n  rate: 10mbit\n---\nrate: {{ rate }}\nline: 5\n"
    assert load_text(text, "f.yaml").data == {"rate": "10mbit", "line": 5}
    assert load_text(text, "f.yaml", {"rate": "1gbit"}).data["rate"] == "1gbit"


def test_line_numbers_survive_the_variables_header():
    text = "variables:\n  n: 1\n---\na: 1\nb:\n  c: {{ n }}\n"
    doc = load_text(text, "f.yaml")
    assert doc.lines["b.c"] == 6


def test_environment_only_when_asked(monkeypatch):
    monkeypatch.setenv("TB_TEST_RATE", "7mbit")
    with pytest.raises(ConfigError, match="only with --env"):
        load_text("rate: {{ env.TB_TEST_RATE }}\n", "f.yaml")
    assert load_text("rate: {{ env.TB_TEST_RATE }}\n", "f.yaml", use_env=True).data == \
        {"rate": "7mbit"}


def test_loops_expand():
    text = "variables:\n  n: 3\n---\nnodes:\n{% for i in range(n) %}  h{{ i }}: {}\n{% endfor %}"
    assert list(load_text(text, "f.yaml").data["nodes"]) == ["h0", "h1", "h2"]


@pytest.mark.parametrize("text,key,value", [("n=5", "n", 5), ("rate=10mbit", "rate", "10mbit"),
                                            ("loss=1%", "loss", "1%"), ("x=", "x", ""),
                                            ("ecn=true", "ecn", True), ("e=False", "e", False),
                                            # YAML 1.1 made these booleans: bufferbloat's
                                            # `ecn == "on"` then ran silently without ECN
                                            ("ecn=on", "ecn", "on"), ("ecn=off", "ecn", "off"),
                                            ("x=yes", "x", "yes"), ("x=No", "x", "No")])
def test_parse_assignment(text, key, value):
    assert parse_assignment(text) == (key, value)


def test_parse_assignment_rejects():
    with pytest.raises(ConfigError):
        parse_assignment("novalue")
    with pytest.raises(ConfigError):
        parse_assignment("bad-name=1")


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_yaml_is_composed_by_libyaml(monkeypatch):
    """PyYAML's own parser took 0.8 s of every `up` of a 1000-router line; libyaml 0.05 s."""
    used = []
    compose = yaml.compose
    monkeypatch.setattr(yaml, "compose",
                        lambda text, Loader: used.append(Loader) or compose(text, Loader=Loader))
    data, lines = parse_yaml("a: 1\nb:\n  - {c: 2.5}\n  - [x, null]\n", "f.yaml")
    assert data == {"a": 1, "b": [{"c": 2.5}, ["x", None]]}
    assert lines["b[1]"] == 4 and lines["b[0].c"] == 3
    assert used == [yaml.CSafeLoader]


def test_yaml_errors_keep_pyyaml_messages():
    """libyaml's message for this is four lines of parser state; PyYAML's is one."""
    with pytest.raises(ConfigError, match="not valid YAML: expected ',' or ']', but got ':'") \
            as caught:
        parse_yaml("a: [1, 2\nb: 3\n", "f.yaml")
    assert caught.value.line == 2


def test_an_alias_is_refused_before_anything_is_composed():
    with pytest.raises(ConfigError, match="anchors and aliases") as caught:
        parse_yaml("a: 1\nb: *x\n", "f.yaml")
    assert caught.value.line == 2
