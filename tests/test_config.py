"""The config file of ``ekm-async run``: the example, every key checked, secrets from files and the
environment only, and a list of hostile files — each one clear line naming the key, nothing started."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ekm_async.cli import main
from ekm_async.config import FACTORY_PASSWORD, ConfigError, example, load, parse, sections

METER = '[[bus.meter]]\naddress = "000300001184"\n'
BUS = f'[[bus]]\nurl = "simulate"\n{METER}'


def config(tmp_path: Path, text: str, **files: str) -> Path:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "ekm.toml"
    path.write_text(text)
    return path


def test_the_example_is_a_working_config_of_the_simulator(tmp_path: Path) -> None:
    c = parse(example(), tmp_path / "ekm.toml", environ={})
    assert [bus.url for bus in c.buses] == ["simulate"]
    assert [(m.address, m.version, m.interval) for m in c.buses[0].meters] == [
        ("000300001184", "v4", 5.0),
        ("000300001185", "v4", 5.0),
        ("000000001234", "v3", 15.0),
    ]
    assert c.store is not None
    assert c.store.path == tmp_path / "ekm.db"  # relative to the config file
    assert c.web is not None
    assert c.web.tokens == {}
    assert c.mqtt is None


def test_every_commented_key_of_the_example_is_a_key_the_config_takes(tmp_path: Path) -> None:
    """Uncommenting the example's optional lines (with files and variables for their secrets) gives a
    valid config: the example documents no key that does not exist."""
    for name in ("web-token", "cert.pem", "key.pem", "mqtt-ca.pem", "mqtt-client.pem", "mqtt-client.key"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "mqtt-password").write_text("secret\n")
    lines = []
    for line in example().splitlines():
        stripped = line.lstrip("# ")
        key = stripped.partition("=")[0].strip()
        uncommented = line
        if line.startswith("# ") and (("=" in stripped and key.isidentifier()) or stripped.startswith("[")):
            uncommented = stripped.replace("/etc/ekm-async/", "")
            if key == "password_env":  # a meter's: keep one source per secret
                uncommented = 'password_env = "EKM_PASSWORD_1184"'
            if key == "password_file" and "mqtt" not in uncommented:
                continue
        lines.append(uncommented)
    text = "\n".join(lines)
    assert "[mqtt]" in text
    assert "commands = false" in text
    c = parse(text, tmp_path / "ekm.toml", environ={"EKM_PASSWORD_1184": "12345678"})
    assert c.web is not None
    assert c.web.tokens == {"token": "x"}
    assert c.web.allowed_hosts == ("ekm.example.org",)
    assert c.mqtt is not None
    assert (c.mqtt.url, c.mqtt.username, c.mqtt.password, c.mqtt.commands) == (
        "mqtts://broker.example.org:8883",
        "ekm",
        "secret",
        False,
    )
    assert c.buses[0].meters[0].password == "12345678"


def test_the_example_names_every_key() -> None:
    """Each key of each table is in the example, set or commented out (docs/config.md shows it)."""
    text = example()
    for section, keys in sections().items():
        for name in keys:
            if section == "[[bus]]" and name not in ("url", "interval", "echo", "timeout_margin"):
                continue  # the meters are [[bus.meter]] tables; the bus's other options are open_bus's
            assert re.search(rf"\b{name} = ", text), (section, name)


def test_the_readme_config_is_a_valid_config(tmp_path: Path) -> None:
    """The README's config of a real installation checks, once its files exist (here, in tmp_path)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (text,) = re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
    text = text.replace("/etc/ekm-async/", f"{tmp_path}/").replace("/var/lib/ekm-async/", f"{tmp_path}/")
    files = {"web-tokens": "alice Xa1\n", "cert.pem": "", "key.pem": "", "mqtt-password": "p\n"}
    for name, content in {**files, "meter-1184.password": "12345678\n"}.items():
        (tmp_path / name).write_text(content)
    c = parse(text, tmp_path / "ekm.toml", environ={})
    assert [b.url for b in c.buses] == ["/dev/ttyUSB0"]
    assert c.mqtt is not None
    assert c.mqtt.commands
    assert c.web is not None
    assert c.web.tokens == {"alice": "Xa1"}
    assert c.buses[0].meters[0].password == "12345678"


def test_secrets_come_from_files_and_the_environment_and_never_show(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        BUS.replace(METER, METER + 'password_file = "pw"\n')
        + '[[bus.meter]]\naddress = "000300001185"\npassword_env = "PW"\n'
        + '[[bus.meter]]\naddress = "000300001186"\n'
        + '[web]\ntoken_file = "token"\n',
        pw="12345678\n",
        token="s3cr3t-token\n",
    )
    c = load(path, environ={"PW": "87654321"})
    passwords = [m.password for m in c.buses[0].meters]
    assert passwords == ["12345678", "87654321", FACTORY_PASSWORD]
    assert c.web is not None
    assert c.web.tokens == {"token": "s3cr3t-token"}
    shown = repr(c)
    for secret in ("12345678", "87654321", "s3cr3t-token"):
        assert secret not in shown


def test_a_token_file_may_name_several_tokens(tmp_path: Path) -> None:
    path = config(tmp_path, BUS + '[web]\ntoken_file = "tokens"\n', tokens="# who may write\nalice Xa1\n\nbob Yb2\n")
    c = load(path, environ={})
    assert c.web is not None
    assert c.web.tokens == {"alice": "Xa1", "bob": "Yb2"}
    assert "Xa1" not in repr(c)


HOSTILE: list[tuple[str, str, str]] = [
    # (what, the file, what the one line must say)
    ("not TOML", "bus = [", "ekm.toml: not valid TOML"),
    ("no bus", "[store]\npath = 'x.db'\n", "ekm.toml: bus: missing"),
    ("an empty bus list", "bus = []\n", "bus: no bus"),
    ("a bus without meters", '[[bus]]\nurl = "simulate"\n', "bus[0].meter: missing"),
    (
        "an unknown top-level key",
        BUS + "[stroe]\npath = 'x'\n",
        "stroe: unknown key (known here: bus, store, web, mqtt)",
    ),
    (
        "a misspelt meter key",
        BUS.replace('address = "000300001184"', 'adress = "000300001184"'),
        "bus[0].meter[0].adress: unknown key",
    ),
    ("a short address", BUS.replace("000300001184", "1184"), "bus[0].meter[0].address: "),
    (
        "an address as a number",
        BUS.replace('"000300001184"', "300001184"),
        "bus[0].meter[0].address: must be a string of 12 digits",
    ),
    (
        "the same meter twice",
        BUS + METER,
        "bus[0].meter[1].address: meter 000300001184 is also bus[0].meter[0].address",
    ),
    ("a bad version", BUS + 'version = "v5"\n', "bus[0].meter[0].version: must be 'v3' or 'v4'; got 'v5'"),
    ("b_every on a V3", BUS + 'version = "v3"\nb_every = 2\n', "bus[0].meter[0].b_every: V3 meters have no B block"),
    ("a negative interval", BUS + "interval = -1\n", "bus[0].meter[0].interval: must be ≥ 0"),
    ("interval as a string", BUS + 'interval = "10"\n', "bus[0].meter[0].interval: must be a number"),
    ("a bad URL", BUS.replace('"simulate"', '"ftp://x"'), "bus[0].url: "),
    (
        "a bus option of the wrong type",
        BUS.replace('url = "simulate"', 'url = "simulate"\nbaud = "fast"'),
        "bus[0].baud: must be an integer",
    ),
    (
        "a bus option out of range",
        BUS.replace('url = "simulate"', 'url = "simulate"\nretries = -1'),
        "bus[0]: retries out of range",
    ),
    (
        "a bad echo",
        BUS.replace('url = "simulate"', 'url = "simulate"\necho = "maybe"'),
        "bus[0]: echo must be auto, on or off",
    ),
    ("a password in the file", BUS + 'password = "12345678"\n', "bus[0].meter[0].password: unknown key"),
    (
        "two password sources",
        BUS + 'password_file = "pw"\npassword_env = "PW"\n',
        "bus[0].meter[0]: give password_file or password_env, not both",
    ),
    ("a missing password file", BUS + 'password_file = "nowhere"\n', "bus[0].meter[0].password_file: cannot read"),
    (
        "an unset variable",
        BUS + 'password_env = "EKM_UNSET_VARIABLE"\n',
        "bus[0].meter[0].password_env: the environment variable EKM_UNSET_VARIABLE is not set",
    ),
    (
        "a bad password in its file",
        BUS + 'password_file = "badpw"\n',
        "bus[0].meter[0].password_file: the password in it:",
    ),
    ("a token file of comments only", BUS + '[web]\ntoken_file = "comments"\n', "web.token_file: no token in it"),
    (
        "a token name twice",
        BUS + '[web]\ntoken_file = "twice"\n',
        "web.token_file: line 2: a second token named 'alice'",
    ),
    ("a port out of range", BUS + "[web]\nport = 70000\n", "web.port: must be 0..65535; got 70000"),
    ("a certificate without its key", BUS + '[web]\ntls_cert = "pw"\n', "web: give tls_cert and tls_key together"),
    ("a missing certificate", BUS + '[web]\ntls_cert = "no.pem"\ntls_key = "no.key"\n', "web.tls_cert: no such file"),
    (
        "allowed_hosts not a list",
        BUS + '[web]\nallowed_hosts = "example.org"\n',
        "web.allowed_hosts: must be a list of host names",
    ),
    ("a bad MQTT URL", BUS + '[mqtt]\nurl = "http://broker"\n', "mqtt.url: url must be mqtt://"),
    (
        "credentials in the MQTT URL",
        BUS + '[mqtt]\nurl = "mqtt://u:hunter2@broker"\n',
        "mqtt.url: no credentials in the URL",
    ),
    (
        "a CA file without TLS",
        BUS + '[mqtt]\nurl = "mqtt://broker"\nca_file = "pw"\n',
        "mqtt.ca_file: needs an mqtts:// url",
    ),
    (
        "a password without a user",
        BUS + '[mqtt]\nurl = "mqtt://broker"\npassword_file = "pw"\n',
        "mqtt: a password needs a username",
    ),
    (
        "a wildcard prefix",
        BUS + '[mqtt]\nurl = "mqtt://broker"\nprefix = "ekm/#"\n',
        "mqtt.prefix: prefix must be one or more topic levels",
    ),
    (
        "commands as a string",
        BUS + '[mqtt]\nurl = "mqtt://broker"\ncommands = "yes"\n',
        "mqtt.commands: must be true or false",
    ),
]


@pytest.mark.parametrize(("what", "text", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_config_is_one_line_naming_the_key(tmp_path: Path, what: str, text: str, message: str) -> None:
    path = config(tmp_path, text, pw="12345678\n", badpw="12ab\n", comments="# none\n", twice="alice A1\nalice B2\n")
    with pytest.raises(ConfigError) as raised:
        load(path, environ={"PW": "12345678"})
    said = str(raised.value)
    assert said.startswith(f"{path}: ")
    assert message in said
    assert "\n" not in said
    assert "hunter2" not in said
    assert "12ab" not in said  # a bad password is not repeated


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ekm_async", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_config_check_says_ok_or_names_the_key_with_status_2(tmp_path: Path) -> None:
    (tmp_path / "ekm.toml").write_text(example())
    ok = run_cli("config", "check", "ekm.toml", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ekm.toml: ok — 3 meters on 1 bus")
    assert not (tmp_path / "ekm.db").exists()  # nothing started
    (tmp_path / "bad.toml").write_text(BUS + "interval = -1\n")
    bad = run_cli("config", "check", "bad.toml", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr == "ekm-async config check: bad.toml: bus[0].meter[0].interval: must be ≥ 0; got -1\n"
    assert bad.stdout == ""


def test_run_with_a_bad_config_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(example().replace('address = "000300001185"', 'address = "x"'))
    result = run_cli("run", "--config", "bad.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "bus[0].meter[1].address" in result.stderr
    assert not (tmp_path / "ekm.db").exists()


def test_mqtt_without_aiomqtt_is_said_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiomqtt" else real(name, *a))
    path = config(tmp_path, BUS + '[mqtt]\nurl = "mqtt://broker"\n')
    with pytest.raises(SystemExit) as exit_:
        main(["config", "check", str(path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"ekm-async config check: {path}: mqtt: needs aiomqtt: pip install 'ekm-async[mqtt]'\n"
    )
