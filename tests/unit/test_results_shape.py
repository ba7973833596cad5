"""Reading run directories that are not what 'testbed run' wrote: every broken
result.json or manifest.json is one ResultsError naming the file and the field,
exit code 7 from compare and report, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from testbed.cli import main as cli
from testbed.analysis import load_runs, summarize
from testbed.analysis.synthetic import FakeFlow, write_run
from testbed.errors import ConfigError, ResultsError, TestbedError

Mutation = Callable[[Any], Any]


def drop(key: str) -> Mutation:
    return lambda d: {k: v for k, v in d.items() if k != key}


def put(path: tuple[Any, ...], value: Any) -> Mutation:
    def mutate(d: Any) -> Any:
        target = d
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        return d
    return mutate


# (file, mutation of its JSON, or raw bytes to write instead; field the error names)
CASES: list[tuple[str, Mutation | bytes, str | None, str]] = [
    ("result.json", drop("flows"), "flows", "missing"),
    ("result.json", drop("workload"), "workload", "missing"),
    ("result.json", drop("status"), "status", "missing"),
    ("result.json", put(("flows",), {"f": {}}), "flows", "expected a list, found an object"),
    ("result.json", put(("flows", 0), None), "flows[0]", "expected an object, found null"),
    ("result.json", put(("flows", 0, "name"), 5), "flows[0].name", "expected a string"),
    ("result.json", put(("flows", 0, "goodput_bps"), "fast"), "flows[0].goodput_bps",
     "expected a number or null, found the string 'fast'"),
    ("result.json", put(("flows", 0, "fct_s"), ["10s"]), "flows[0].fct_s[0]", "expected a number"),
    ("result.json", put(("flows", 0, "cc"), {"x": 1}), "flows[0].cc", "a string or a list"),
    ("result.json", put(("variables",), ["cc", "bbr"]), "variables", "expected an object"),
    ("result.json", put(("suspect_reasons",), "busy"), "suspect_reasons", "expected a list"),
    ("result.json", put(("summary", "qdisc_drops"), [1]), "summary.qdisc_drops",
     "expected an object"),
    ("result.json", put(("schema_version",), None), None, "result schema version None is unknown"),
    ("result.json", lambda d: [d], None, "expected an object, found a list"),
    ("result.json", b'{"schema_version": 1, "workload": "synth', None, "not valid JSON"),
    ("result.json", b'{"schema_version": 1, "workload": "\xff\xfe"}', None, "not UTF-8 text (byte 35 is 0xff)"),
    ("result.json", b"[" * 100_000, None, "nested too deeply"),
    ("manifest.json", lambda d: [d], None, "expected an object, found a list"),
    ("manifest.json", put(("testbed",), "attached"), "testbed", "expected an object"),
    ("manifest.json", put(("nodes_after", "r1", "qdiscs", 0, "options", "rate"), "1mbit"),
     "nodes_after.r1.qdiscs[0].options.rate", "expected a number"),
    ("manifest.json", put(("nodes_before", "r1"), [1]), "nodes_before.r1", "expected an object"),
    ("manifest.json", put(("command",), "testbed run"), "command", "expected a list"),
    ("manifest.json", b'{"schema_version": 1, "kern', None, "not valid JSON"),
    ("manifest.json", b"\x89PNG\r\n", None, "not UTF-8 text (byte 0"),
]


def mutated_run(tmp_path: Path, file: str, mutation: Mutation | bytes) -> Path:
    run = write_run(tmp_path / "runs", "r", variables={"cc": "bbr"},
                    flows=[FakeFlow("f", "bbr", 1e6)])
    path = run / file
    if isinstance(mutation, bytes):
        path.write_bytes(mutation)
    else:
        path.write_text(json.dumps(mutation(json.loads(path.read_text()))))
    return run


@pytest.mark.parametrize("file, mutation, field, message", CASES,
                         ids=[f"{c[0]}:{c[2] or c[3]}" for c in CASES])
def test_a_broken_run_is_one_error_naming_file_and_field(tmp_path, capsys, file, mutation,
                                                         field, message):
    run = mutated_run(tmp_path, file, mutation)
    with pytest.raises(ResultsError) as exc:
        load_runs([run])
    assert exc.value.file == str(run / file) and exc.value.path == field
    assert message in str(exc.value)
    assert str(exc.value).startswith(f"{run / file}: " + (f"{field}: " if field else ""))
    for command in (["compare", str(run)], ["report", str(run), "-o", str(tmp_path / "r.html")]):
        assert cli.main(command) == ResultsError.exit_code == 7
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1
        assert f"{run / file}" in err and message in err
    assert not (tmp_path / "r.html").exists()


def test_results_error_has_its_own_exit_code():
    from testbed.remote.errors import RemoteError
    others = {ConfigError.exit_code, TestbedError.exit_code, RemoteError.exit_code}
    assert ResultsError.exit_code not in others | {0, 1, 2}
    assert issubclass(ResultsError, TestbedError)


@pytest.mark.parametrize("command", ["compare", "report"])
def test_help_lists_the_exit_codes(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "2 bad command line" in out and "7 the runs cannot be read" in out
    assert ("1 an --assert failed" in out) == (command == "compare")


def test_what_testbed_run_may_write_still_loads(tmp_path):
    """Shapes a real run writes (tc's text when 'tc -j' failed, a list of ccs, nulls) load."""
    run = write_run(tmp_path, "r", variables={"cc": "bbr"}, flows=[FakeFlow("f", "bbr", 1e6)])
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["nodes_after"]["r1"]["qdiscs"] = "Error: something tc said"
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = json.loads((run / "result.json").read_text())
    result["flows"][0].update(cc=["bbr", "cubic"], goodput_bps=None, fct_s=[None])
    (run / "result.json").write_text(json.dumps(result))
    summary = summarize(load_runs([run]))
    assert summary.rows[0].estimate("utilisation").mean is None    # no tbf bytes after: no rate
    assert cli.main(["compare", str(run)]) == 0


def test_a_broken_csv_or_raw_client_output_names_its_file(tmp_path, capsys):
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "bbr", 1e6,
                                                                latencies_ms=(1.0, 2.0))])
    (run / "raw" / "f.client.json").write_text(json.dumps({"connections": [{"latencies_us": "1"}]}))
    assert cli.main(["compare", str(run), "--metrics", "latency_p50"]) == 7
    assert f"{run}/raw/f.client.json: connections[0].latencies_us: expected a list" in \
        capsys.readouterr().err
    (run / "tcp_info.csv").write_bytes(b"flow,t\nf,\xff\n")
    assert cli.main(["compare", str(run), "--metrics", "rtt_p50"]) == 7
    assert f"{run}/tcp_info.csv: not UTF-8 text" in capsys.readouterr().err


def _tcp_info_damaged(text: str | None):
    def damage(run: Path) -> None:
        if text is None:
            (run / "tcp_info.csv").unlink()
        else:
            (run / "tcp_info.csv").write_text(text)
    return damage


def _tcp_info_cell(value: str):
    def damage(run: Path) -> None:
        lines = (run / "tcp_info.csv").read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[1].split(",")
        cells[header.index("srtt_us")] = value
        lines[1] = ",".join(cells)
        (run / "tcp_info.csv").write_text("\n".join(lines) + "\n")
    return damage


@pytest.mark.parametrize("damage, says", [
    (_tcp_info_damaged(None), "tcp_info.csv: missing"),
    (_tcp_info_damaged("flow,t\nf,1\n"), "tcp_info.csv: no column"),
    (_tcp_info_cell("fast"), "line 2, column srtt_us: 'fast' is not a number"),
    (lambda run: (run / "tcp_info.csv").write_text(
        (run / "tcp_info.csv").read_text().splitlines()[0] + "\nf,1\n"),
     "line 2 does not have the header's"),
], ids=["missing", "columns", "word", "short-row"])
def test_a_damaged_tcp_info_csv_is_exit_7_not_vanishing_columns(tmp_path, capsys, damage, says):
    """Before, compare printed the run with its rtt/cwnd columns empty and exited 0."""
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "bbr", 1e6)])
    damage(run)
    assert cli.main(["compare", str(run), "--metrics", "rtt_p50"]) == 7
    err = capsys.readouterr().err
    assert f"{run}/" in err and says in err and err.count("\n") == 1
