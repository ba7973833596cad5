"""An impairment as plain fields in base units (status --json)."""

import json

import pytest

from testbed.model.impairment import Impairment, parse_impairment


def test_fields_are_base_units_and_only_what_is_set():
    imp = parse_impairment({"rate": "10mbit", "delay": "20ms", "jitter": "2ms",
                            "distribution": "normal", "loss": "0.5%", "queue": "100p",
                            "reorder": "1%"}, file=None, path="t")
    assert imp.as_fields() == {"rate_bps": 10e6, "delay_s": 0.02, "jitter_s": 0.002,
                               "distribution": "normal", "loss": 0.005,
                               "queue": {"packets": 100}, "reorder": 0.01}
    assert parse_impairment({}, file=None, path="t").as_fields() == {}
    ge = parse_impairment({"loss": {"p": "1%", "r": "10%"}}, file=None, path="t").as_fields()
    assert ge["loss_gilbert_elliott"]["p"] == 0.01 and ge["loss_gilbert_elliott"]["r"] == 0.1


EVERY_KIND = [
    {},
    {"rate": "10mbit", "delay": "20ms", "jitter": "2ms", "distribution": "normal",
     "loss": "0.5%", "queue": "100p", "reorder": "1%", "duplicate": "0.1%", "corrupt": "0.01%"},
    {"rate": "1.5gbit", "queue": "375KB"},
    {"rate": "7kbit", "delay": "0.3ms", "queue": "1.5bdp", "loss": "0%"},
    {"delay": "10ms", "loss": {"p": "1%", "r": "10%", "h": "20%", "k": "99%"}},
    {"jitter": "1ms"},
]


@pytest.mark.parametrize("raw", EVERY_KIND)
def test_fields_read_back_exactly_through_json(raw):
    imp = parse_impairment(raw, file=None, path="t", partial=True)
    again = Impairment.from_fields(json.loads(json.dumps(imp.as_fields())))
    assert again == imp
    assert again.describe() == imp.describe()


@pytest.mark.parametrize("fields", [{"rate": 1e6}, {"loss_gilbert_elliott": {"p": 0.1}},
                                    {"queue": {"packets": 1, "bytes": 2}}, {"queue": {"p": 1}}])
def test_fields_it_does_not_write_are_refused(fields):
    with pytest.raises(ValueError):
        Impairment.from_fields(fields)
