"""The command line's shape: one dispatch, options that mean one thing, a light start.

No root needed: nothing here gets as far as the kernel.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = str(REPO / "workloads" / "cubic-vs-bbr.yaml")
TOPOLOGY = str(REPO / "topologies" / "dumbbell.yaml")


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(argv prefix, parser) of every subcommand, nested ones (link show) too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*path, name))
            return
    yield path, parser


def test_every_subcommand_dispatches_through_set_defaults():
    found = list(subcommands(cli.build_parser()))
    assert len(found) >= 14
    missing = [" ".join(path) for path, p in found if not callable(p.get_default("func"))]
    assert not missing


@pytest.mark.parametrize("argv", [
    ["up", TOPOLOGY], ["plan", TOPOLOGY], ["down"], ["run", WORKLOAD], ["validate", TOPOLOGY],
])
def test_set_lands_in_one_attribute_everywhere(argv):
    args = cli.build_parser().parse_args([*argv, "--set", "a=1", "--set=b=2"])
    assert args.assignments == ["a=1", "b=2"]


@pytest.mark.parametrize("argv", [
    ["status"], ["exec"], ["down"], ["clean"], ["up", TOPOLOGY], ["run", WORKLOAD],
    ["validate"], ["link", "show"], ["link", "set", "a-b", "delay=1ms"],
])
def test_name_is_the_instance_name_everywhere(argv):
    tail = ["h1"] if argv == ["exec"] else []   # exec takes what follows NODE as the command
    assert cli.build_parser().parse_args([*argv, "--name", "x", *tail]).name == "x"


def test_link_takes_testbed_as_its_name():
    # link acts only on a testbed that is up: there --testbed NAME and --name NAME are one
    args = cli.build_parser().parse_args(["link", "show", "--testbed", "x"])
    assert args.name == "x"


@pytest.mark.parametrize("command, argv", [
    ("run", [WORKLOAD]), ("validate", []),
])
def test_name_with_testbed_is_refused_not_ignored(capsys, command, argv):
    # before: --name was silently dropped when --testbed was given
    code = cli.main([command, *argv, "--testbed", "acup", "--name", "acother"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("testbed: error: --name") and "--testbed" in err
    assert err.count("\n") == 1


def test_remote_run_checks_its_options_before_connecting(capsys):
    # before: ValueError traceback from expand_points; now a usage error, exit 2, and
    # nothing connects (the address is TEST-NET-1: nobody answers)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--host", "nobody@192.0.2.1", "run", WORKLOAD, "--repeat", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --repeat: 0 repetitions: give 1 to 10000" in err


@pytest.mark.parametrize("argv", [["--help"], ["compare", "/nonexistent-ac-runs"], ["schema"]])
def test_commands_that_read_no_kernel_do_not_import_pyroute2_or_matplotlib(argv):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "testbed", *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "testbed.cli.main" in imported
    assert not {"pyroute2", "matplotlib", "paramiko"} & imported
