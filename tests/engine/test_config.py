"""TCPConfig: defaults, validation, conversion from strings and TOML, and the knob listing."""

import dataclasses
from pathlib import Path

import pytest

from pytcp.config import ConfigError, TCPConfig


def test_defaults_are_valid_and_documented() -> None:
    config = TCPConfig()
    assert config.mss == 1460
    assert config.time_wait == 60.0
    assert config.congestion_control == "cubic"
    rows = config.describe()
    assert [name for name, _, _ in rows] == [f.name for f in dataclasses.fields(TCPConfig)]
    for name, value, doc in rows:
        assert value == getattr(config, name)
        assert len(doc) > 40, name


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TCPConfig().mss = 1000  # type: ignore[misc]


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        TCPConfig(1460)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"mss": 87}, "mss must be in 88..65495"),
        ({"mss": 65496}, "mss must be in 88..65495"),
        ({"recv_buffer": 2919}, "recv_buffer must be in 2*mss..max_buffer = 2920..4194304"),
        ({"send_buffer": 4194305}, "send_buffer must be in 2*mss..max_buffer"),
        ({"max_buffer": 2**31}, "max_buffer must be in 176..1073725440"),
        ({"max_buffer": 100000}, "recv_buffer must be in 2*mss..max_buffer = 2920..100000"),
        ({"initial_cwnd_segments": 0}, "initial_cwnd_segments must be in 1..100"),
        ({"delayed_ack": 0.5}, "delayed_ack must be in 0.001..0.2"),
        ({"quickack_segments": 3}, "quickack_segments must be in 1..2"),
        ({"rto_min": 2.0}, "rto_initial must be in rto_min..rto_max = 2.0..120.0"),
        ({"rto_max": 0.5}, "rto_initial must be in rto_min..rto_max"),
        ({"rto_max": 121.0}, "rto_max must be in 0.001..120.0"),
        ({"rto_min": 0.0}, "rto_min must be in 0.001..120.0"),
        ({"syn_retries": 0}, "syn_retries must be in 1..127"),
        ({"msl": -1.0}, "msl must be in 0.001..120.0"),
        ({"msl": float("nan")}, "msl must be in"),
        ({"fin_timeout": float("inf")}, "fin_timeout must be in"),
        ({"keepalive_time": 40000.0}, "keepalive_time must be in 1.0..32767.0"),
        ({"keepalive_probes": 128}, "keepalive_probes must be in 1..127"),
        ({"user_timeout": -0.5}, "user_timeout must be in 0.0.."),
        ({"somaxconn": 65536}, "somaxconn must be in 1..65535"),
        ({"max_syn_backlog": 0}, "max_syn_backlog must be in 1..max_connections = 1..65536"),
        ({"max_connections": 100}, "max_syn_backlog must be in 1..max_connections = 1..100"),
        ({"syncookies": "maybe"}, "syncookies must be one of off, auto, on"),
        ({"congestion_control": "bbr"}, "congestion_control must be one of cubic, reno"),
        ({"ttl": 256}, "ttl must be in 1..255"),
        ({"max_reassembly_ranges": 0}, "max_reassembly_ranges must be in 1..1024"),
        ({"challenge_ack_limit": 0}, "challenge_ack_limit must be in 1.."),
    ],
)
def test_out_of_range(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        TCPConfig(**changes)  # type: ignore[arg-type]
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"mss": "1460"}, "mss must be int (got '1460')"),
        ({"mss": 1460.0}, "mss must be int"),
        ({"mss": True}, "mss must be int"),
        ({"sack": 1}, "sack must be bool (got 1)"),
        ({"rto_min": True}, "rto_min must be float"),
        ({"rto_min": "0.2"}, "rto_min must be float"),
        ({"congestion_control": 1}, "congestion_control must be str"),
    ],
)
def test_wrong_type(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TCPConfig(**changes)  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_ints_are_accepted_for_float_knobs() -> None:
    config = TCPConfig(msl=10, rto_max=60)
    assert config.msl == 10.0 and type(config.msl) is float
    assert config.time_wait == 20.0
    assert type(config.rto_max) is float


def test_replace_validates() -> None:
    base = TCPConfig()
    small = base.replace(mss=536, recv_buffer=65536)
    assert (small.mss, small.recv_buffer, small.send_buffer) == (536, 65536, 262144)
    assert base.mss == 1460
    with pytest.raises(ConfigError, match="mss must be in"):
        base.replace(mss=10)
    with pytest.raises(ConfigError, match="unknown knob"):
        base.replace(window=5)


def test_from_mapping_converts_strings() -> None:
    config = TCPConfig.from_mapping(
        {
            "mss": "1400",
            "sack": "no",
            "nodelay": " Yes ",
            "timestamps": "0",
            "keepalive": "on",
            "tw_reuse": "TRUE",
            "delayed_ack": "0.1",
            "msl": "15",
            "congestion_control": "reno",
            "window_scaling": False,
        }
    )
    assert config.mss == 1400
    assert (config.sack, config.nodelay, config.timestamps, config.keepalive, config.tw_reuse) == (
        False,
        True,
        False,
        True,
        True,
    )
    assert config.delayed_ack == 0.1 and config.msl == 15.0
    assert config.congestion_control == "reno" and config.window_scaling is False


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ({"mss": "lots"}, "mss must be int (got 'lots')"),
        ({"mss": "1460.5"}, "mss must be int"),
        ({"sack": "maybe"}, "sack must be bool (got 'maybe')"),
        ({"msl": "soon"}, "msl must be float"),
        ({"mss": "10"}, "mss must be in 88..65495"),
    ],
)
def test_from_mapping_rejects_bad_strings(mapping: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        TCPConfig.from_mapping(mapping)
    assert fragment in str(info.value)


def test_from_mapping_lists_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown knob\\(s\\): rcvbuf, window"):
        TCPConfig.from_mapping({"window": 1, "mss": 1400, "rcvbuf": 2})


def test_load_top_level(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_text('mss = 1400\nsack = false\nmsl = 5\nsyncookies = "on"\n')
    config = TCPConfig.load(path)
    assert (config.mss, config.sack, config.msl, config.syncookies) == (1400, False, 5.0, "on")


def test_load_tcp_table_beside_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_text('[tun]\nname = "tun0"\n\n[tcp]\nrecv_buffer = 1048576\ncongestion_control = "reno"\n')
    config = TCPConfig.load(str(path))
    assert (config.recv_buffer, config.congestion_control) == (1048576, "reno")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mss = \n", "stack.toml"),
        ("tcp = 3\n", "tcp must be a table"),
        ("[tcp]\nmss = 1.5\n", "mss must be int"),
        ("[tcp]\nbogus = 1\n", "unknown knob(s): bogus"),
    ],
)
def test_load_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        TCPConfig.load(path)
    assert fragment in str(info.value)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TCPConfig.load(tmp_path / "absent.toml")
