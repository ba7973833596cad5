"""YAML anchors and aliases are refused in every file testbed reads: nested aliases
expand exponentially (a 1 KB file to gigabytes), an alias inside its own anchor never ends."""

import resource
import subprocess
import sys

import pytest

from testbed.errors import ConfigError
from testbed.model.document import load_text
from testbed.remote import sweep

REFUSED = "YAML anchors and aliases (&name, *name) are not allowed"


def _bomb(levels: int) -> str:
    """A topology whose last key expands to 9**levels strings (about 70 bytes a level)."""
    lines = ["name: t", "nodes: {h1: {}, h2: {}}", 'l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, line", [
    (_bomb(3), 3),
    ("name: t\nnodes: &n {h1: {}, h2: {x: *n}}\n", 2),            # recursive
    ("name: t\nnodes:\n  h1: {}\n  h2: *h1\n", 4),                # alias to an unknown anchor
    ("variables:\n  a: 1\n  b: &b 2\n---\nname: t\n", 3),         # in the variables header
])
def test_anchors_and_aliases_are_one_error_with_the_line(text, line):
    with pytest.raises(ConfigError) as info:
        load_text(text, "t.yaml")
    assert REFUSED in info.value.message
    assert (info.value.file, info.value.line) == ("t.yaml", line)


def _limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(9))          # 9**10 strings once expanded; under 1 KB as written
    assert bomb.stat().st_size < 1024
    proc = subprocess.run([sys.executable, "-m", "testbed", "plan", str(bomb)],
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=_limited_memory)
    assert proc.returncode == 2
    assert f"{bomb}:3: {REFUSED}" in proc.stderr


def test_hosts_file_refuses_aliases(tmp_path):
    f = tmp_path / "hosts.yaml"
    f.write_text("hosts: &h\n  - lab1\n  - *h\n")
    with pytest.raises(ConfigError) as info:
        sweep.load_hosts(str(f))
    assert REFUSED in info.value.message and info.value.line == 1
