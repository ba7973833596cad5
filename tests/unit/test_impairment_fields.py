"""An impairment as plain fields in base units (status --json)."""

from testbed.model.impairment import parse_impairment


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
