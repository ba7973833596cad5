"""Options that mean the same in every subcommand, each added by one helper.

- ``--name NAME``: the testbed instance's name (``args.name``). Commands that
  bring a testbed up give it this name; commands that act on one already up
  pick it by this name.
- ``--testbed NAME``: use testbed NAME, already up, and leave it up
  (``args.testbed_name``). A command that can also bring one up refuses
  ``--name`` with it.
- ``--set KEY=VALUE``: a template variable, repeatable (``args.assignments``;
  ``variables(args)`` turns them into a dict).
- ``--point``/``--index``/``--shard``/``--point-from-env``/``--shards``/
  ``--expect-matrix``: which runs of the matrix a sweep worker does
  (``selection(args)``).
"""

from __future__ import annotations

import argparse
from typing import Any

from testbed.cli.args import instance_name
from testbed.errors import ConfigError
from testbed.workload.sharding import INDEX_VARIABLE, Selection

LINK_BACKENDS = ("auto", "netem", "userspace")


def add_name(p: argparse.ArgumentParser, default: str) -> None:
    """``--name``; ``default`` says what is used without it."""
    p.add_argument("--name", type=instance_name,
                   help=f"testbed instance name (default: {default})")


def add_testbed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--testbed", dest="testbed_name", default=None, metavar="NAME",
                   type=instance_name,
                   help="use this testbed, already up ('testbed up'), and leave it up")


def add_variables(p: argparse.ArgumentParser, *, more: str = "", env: bool = False) -> None:
    """``--set`` (and ``--env`` where the file is rendered here, with ``env``)."""
    p.add_argument("--set", dest="assignments", action="append", default=[],
                   metavar="KEY=VALUE",
                   help=f"template variable (repeatable); overrides the file's variables;{more} "
                   "VALUE is read as YAML (5 is a number, 1%% a string)")
    if env:
        p.add_argument("--env", action="store_true",
                       help="expose the process environment to the template as 'env'")


def add_link_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--link-backend", choices=LINK_BACKENDS, default="auto",
                   help="link emulation backend (default auto: netem if the kernel has it)")


def variables(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set`` assignments as a dict (later ones win)."""
    # model.document brings in jinja2 and yaml (~0.1 s): not on the path of --help or compare
    from testbed.model.document import parse_assignment
    return dict(parse_assignment(item) for item in args.assignments)


def name_or_testbed(args: argparse.Namespace, command: str) -> None:
    """``--name`` names the testbed ``command`` brings up; ``--testbed`` uses one already up."""
    if args.name and args.testbed_name:
        raise ConfigError(f"--name names the testbed '{command}' brings up and --testbed uses "
                          "one already up: give one of them")


def add_selection(p: argparse.ArgumentParser) -> None:
    """A sweep worker's options: which of the matrix's runs it does ('testbed matrix' lists them)."""
    g = p.add_argument_group("sweep workers (one of --point, --index, --shard, --point-from-env)")
    g.add_argument("--point", dest="point_id", default=None, metavar="ID",
                   help="only the run with this id (or every repetition of a point's key)")
    g.add_argument("--index", type=int, default=None, metavar="N", help="only the N-th run (from 0)")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="every N-th run from the I-th (I from 1): N shards partition the runs")
    g.add_argument("--point-from-env", nargs="?", const=INDEX_VARIABLE, default=None,
                   metavar="VAR", help=f"the run index (or with --shards the shard index) from "
                   f"the environment variable VAR (default: {INDEX_VARIABLE}, as a Kubernetes "
                   "Indexed Job sets it)")
    g.add_argument("--shards", type=int, default=None, metavar="N",
                   help="with --point-from-env: the index names one of N shards")
    g.add_argument("--expect-matrix", default=None, metavar="HASH",
                   help="refuse to run unless this expansion is the listed one (its hash)")


def selection(args: argparse.Namespace) -> Selection:
    return Selection(point_id=args.point_id, index=args.index, shard=args.shard,
                     from_env=args.point_from_env, shards=args.shards,
                     expect_matrix=args.expect_matrix)
