"""Every snippet of README.md and docs/*.md runs as written, against the simulator, so the text cannot drift.

* A ```python block is a program: run as it is, in a directory of its own.
* A ```sh line that runs ``ekm-async`` is run (through bash, as typed). A long-running one (``serve``,
  ``run``, ``simulate``, ``poll`` without ``--count``) is started and awaited until it is ready — its first
  line, its page answering, its first state on the broker — kept running while the block's later lines run
  (as in another terminal), then stopped with SIGINT: it must exit 0.
* A synopsis line (``[…]``, ``…``, ``A|B``, PLACEHOLDERS), and every inline `` `ekm-async …` `` of the text,
  is checked against the command's own parser: the subcommand and every option it names exist, and every
  choice it lists is one.
* A ```toml block is a config file: ``ekm-async config check`` accepts it and ``ekm-async run`` runs it.

Only the endpoints a user would have instead are substituted (:data:`ENDPOINTS`): simulated buses served
by this process, unpaced, holding the meters the text names; a mosquitto of the line's own; the block's
directory, which holds the files the text says a user has (:data:`FILES`). What cannot run is in
:data:`SKIPPED`, with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import aiohttp
import aiomqtt
import pytest
import trustme

from ekm_async.cli import _parser
from ekm_async.sim import MeterModel, MeterType, SimBus, SimServer

from .conftest import EarlyRuns, early
from .realparts import find, free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
GUARD = 30.0
"""Seconds a command, a readiness or a stop may take before it counts as hung."""
CONCURRENCY = 3
"""Blocks run at once: most of a block's time is a process starting; the machine has 2 cores."""

METERS = {"000300001184": MeterType.V4, "000300001185": MeterType.V4, "000000001234": MeterType.V3}
"""The meters the snippets name: every simulated bus holds all three."""
MQTT_USER, MQTT_PASSWORD = "ekm", "correct horse"
WEB_TOKEN = "s3cret-token"

ENDPOINTS = {
    "/dev/ttyUSB0": "a pty of a simulated bus served by this test",
    "tcp://gw-1:4001": "a simulated bus on a TCP port of this test",
    "tcp://gateway:4001": "a simulated bus on a TCP port of this test",
    "127.0.0.1:4001": "a free port (where the block's `ekm-async simulate --tcp` listens, and its clients go)",
    "/tmp/ekm-bus": "the block's directory (the pty link of `ekm-async simulate --pty`)",
    "mqtt://broker:1883": "a mosquitto of the line's own",
    "mqtts://broker:8883": "that mosquitto's TLS listener, with a login (its CA: ca.pem and $SSL_CERT_FILE)",
    "mqtts://broker.example.org:8883": "that mosquitto's TLS listener, as above",
    "/etc/ekm-async/": "the block's directory (it holds FILES)",
    "/var/lib/ekm-async/": "the block's directory",
}
"""Placeholder → what stands in for it. Besides: the web service's default port 8080 becomes any free port
(``serve`` gets ``--port 0``, a config ``run`` is given gets ``port = 0``) — 8080 may be taken here."""

SKIPPED = {
    "README.md#ekm-async:sh": "the install and the whole suite: tests/test_readme.py holds them to what CI runs",
    "README.md#testing-your-application:python": "a test file: tests/test_testing_kit.py runs it as its comment says",
    "docs/deployment.md#as-a-systemd-service:sh": "installs a system service, as root: tests/test_deployment.py "
    "checks the unit with systemd-analyze",
    "pip install 'ekm-async[mqtt]'": "installs the extra, which the tests' environment has",
}
"""Block ids and sh lines the runner cannot run, each with the reason."""
RUN_ELSEWHERE = {
    "README.md#ekm-async:sh": ("tests/test_readme.py", "def test_ci_runs_exactly_the_readme_test_command"),
    "README.md#testing-your-application:python": ("tests/test_testing_kit.py", "# test_my_app.py"),
    "docs/deployment.md#as-a-systemd-service:sh": ("tests/test_deployment.py", "def test_systemd_accepts_the_unit"),
}
"""Skipped blocks another test runs: (that test file, what shows it does)."""

EXPECTED = {
    "README.md#reading-and-setting-meters:python": [
        r"^\d+\.\d+ \d+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$",
        r"^\[\d+\.\d+, \d+\.\d+\]$",
    ],
    "README.md#polling-observers-and-storage:python": [
        *(rf"^{address} \d+\.\d+$" for address in METERS),
        *(rf"^{address} \d+ W$" for address in METERS),
    ],
    "README.md#the-web-service:sh": [r"^serving http://127\.0\.0\.1:\d+/ — 4 meters, writes disabled"],
    "README.md#mqtt-and-home-assistant:sh": [r"^│ 000300001184 +│", r"^│ 000300001185 +│"],
    "README.md#mqtt-and-home-assistant:python": [r"^[1-9]\d* messages published, 0 undelivered$"],
    "README.md#the-simulator:sh": [
        r"^ready tcp=127\.0\.0\.1:\d+ pty=\S+ekm-bus meters=v4:000300001184,v3:000000001234 baud=9600 ",
        r"^meter 000300001184: V4 ",
        r"\d+\.\d+ kWh",
    ],
    "README.md#the-protocol-core:python": [
        r"^000300001184 1234\.56$",
        r"^Frame$",
        re.escape(r"b'\x01W1\x020081(10005)\x03!`'"),
        r"^b'!`'$",
    ],
    "README.md#running-it-for-a-year-ekm-async-run:sh": [r"^running ekm\.toml: 3 meters on 1 bus, store \S*ekm\.db"],
    "README.md#running-it-for-a-year-ekm-async-run:toml": [
        r"^ekm\.toml: ok — 2 meters on 1 bus",
        r"^running ekm\.toml: 2 meters on 1 bus, .*serving https://0\.0\.0\.0:\d+/ \(writes need a token\), "
        r"MQTT mqtts://localhost:\d+ \(relay commands on\)$",
    ],
    "docs/architecture.md#the-public-api:python": [r"^v4a 12\.5 True$", r"^000300001184 \d+\.\d+$"],
    "docs/config.md#the-example:toml": [r"^ekm\.toml: ok — 3 meters", r"^running ekm\.toml: 3 meters"],
    "docs/deployment.md#the-process-ekm-async-run-config-file:sh": [
        r"^ekm\.toml: ok — 3 meters on 1 bus",
        r"^running ekm\.toml: 3 meters on 1 bus, store \S*ekm\.db, serving http://127\.0\.0\.1:\d+/",
    ],
    "docs/protocol.md#3-1-algorithm:python": [r"^b'!`'$"],
}
"""What each block must print (regular expressions, each matching a line of its stdout)."""


# ---------------------------------------------------------------------------------------------------
# The snippets


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    section: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}#{re.sub(r'[^a-z0-9]+', '-', self.section.lower()).strip('-')}:{self.lang}"


@cache
def blocks() -> list[Block]:
    """Every fenced block of the documents, with the heading it is under."""
    found = []
    for path in DOCUMENTS:
        doc, section, lang, start, body = path.relative_to(ROOT).as_posix(), "", "", 0, list[str]()
        inside = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not inside and line.startswith("```"):
                inside, lang, start, body = True, line[3:].strip(), number, []
            elif inside and line.startswith("```"):
                inside = False
                found.append(Block(doc, start, lang, section, "\n".join(body) + "\n"))
            elif inside:
                body.append(line)
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
    return found


def runnable() -> list[Block]:
    """The blocks to run: those with a command to type (a block of synopses only is checked as such)."""
    return [
        b
        for b in blocks()
        if b.lang in ("python", "toml") or (b.lang == "sh" and any(map(is_command, command_lines(b.text))))
        if b.id not in SKIPPED
    ]


def command_lines(text: str) -> list[str]:
    """The logical lines of a sh block: a line ending in ``\\`` or followed by an indented one goes on."""
    lines: list[str] = []
    for raw in text.splitlines():
        if lines and (lines[-1].endswith("\\") or raw[:1].isspace()):
            lines[-1] = lines[-1].removesuffix("\\").rstrip() + " " + raw.strip()
        elif raw.strip():
            lines.append(raw.strip())
    return lines


def without_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line)


def is_synopsis(line: str) -> bool:
    """A line that shows a command's shape rather than a command to type."""
    words = without_comment(line).split()
    return any("[" in w or "…" in w or "|" in w or re.fullmatch(r"[A-Z][A-Z_-]+(…)?", w) or w == "…" for w in words)


def is_command(line: str) -> bool:
    return line not in SKIPPED and not is_synopsis(line)


def sh_lines() -> list[tuple[Block, str]]:
    return [(b, line) for b in blocks() if b.lang == "sh" for line in command_lines(b.text)]


def synopses() -> list[str]:
    """Synopsis lines of sh blocks, and every inline `ekm-async …` of the text."""
    lines = [line for _, line in sh_lines() if line.startswith("ekm-async ") and is_synopsis(line)]
    for path in DOCUMENTS:
        lines += re.findall(r"`(ekm-async [^`]+)`", path.read_text())
    return lines


# ---------------------------------------------------------------------------------------------------
# Synopses against the parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(
        (dict(a.choices) for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
        {},
    )


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every option of ``parser`` and of the parsers under it (``set``'s settings take options of their own)."""
    options = {name: action for action in parser._actions for name in action.option_strings}
    for sub in _subparsers(parser).values():
        options |= _options(sub)
    return options


def synopsis_problems(line: str) -> list[str]:
    """What ``line`` says of ``ekm-async`` that its parser does not have."""
    problems = []
    words = [w for w in without_comment(line).split() if w != "|"]
    commands: list[list[str]] = []
    for word in words:
        if word == "ekm-async":
            commands.append([])
        elif commands:
            commands[-1].append(word)
    for command in commands:
        parser = _parser()
        sub = command[0].strip("[]") if command else ""
        if sub not in _subparsers(parser):
            problems.append(f"no subcommand {sub!r}")
            continue
        parser = _subparsers(parser)[sub]
        if len(command) > 1 and command[1] in _subparsers(parser):
            parser = _subparsers(parser)[command[1]]
        options = _options(parser)
        for word, after in zip(command, [*command[1:], ""], strict=True):
            if not word.lstrip("[").startswith("--"):
                continue
            name = re.split(r"[=\]…,]", word.lstrip("["))[0]
            if name not in options:
                problems.append(f"{sub}: no option {name}")
                continue
            value = after.strip("[]…")
            choices = options[name].choices
            if choices is not None and value and not value.startswith("--") and not value.isupper():
                problems += [
                    f"{sub} {name}: {choice!r} is not one of {list(choices)}"
                    for choice in value.split("|")
                    if choice not in {str(c) for c in choices}
                ]
    return problems


# ---------------------------------------------------------------------------------------------------
# What the snippets run against


@dataclass(frozen=True)
class Secrets:
    """Made once for the module: a CA and a certificate for localhost (the broker's and the web service's),
    the broker's password file."""

    ca: Path
    cert: Path
    key: Path
    passwords: Path


FILES = {
    "ca.pem": "the CA of the broker and of the web service",
    "cert.pem": "a certificate for localhost and 127.0.0.1",
    "key.pem": "its key",
    "pw": "the broker password",
    "mqtt-password": "the broker password",
    "web-tokens": "a web token, as NAME TOKEN",
    "meter-1184.password": "the meter's password (the factory one)",
}
"""The files in every block's directory: those the text says a user has."""


def provide_files(directory: Path, secrets: Secrets) -> None:
    contents = {
        "ca.pem": secrets.ca.read_text(),
        "cert.pem": secrets.cert.read_text(),
        "key.pem": secrets.key.read_text(),
        "pw": f"{MQTT_PASSWORD}\n",
        "mqtt-password": f"{MQTT_PASSWORD}\n",
        "web-tokens": f"admin {WEB_TOKEN}\n",
        "meter-1184.password": "00000000\n",
    }
    assert set(contents) == set(FILES)
    for name, text in contents.items():
        (directory / name).write_text(text)


@dataclass
class Broker:
    """mosquitto: a plain anonymous listener (``mqtt://``, and the test's watcher) and a TLS one with a login."""

    directory: Path
    secrets: Secrets
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        config = self.directory / f"mosquitto-{self.port}.conf"
        config.write_text(
            # Started as root, mosquitto would become the user "mosquitto", who cannot read the test's files.
            "per_listener_settings true\npersistence false\nuser root\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"listener {self.tls_port} 127.0.0.1\nallow_anonymous false\npassword_file {self.secrets.passwords}\n"
            f"certfile {self.secrets.cert}\nkeyfile {self.secrets.key}\n"
        )
        self.process = await asyncio.create_subprocess_exec(
            find("mosquitto", "mosquitto"),
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(GUARD):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.tls_port)
                except OSError:
                    assert self.process.returncode is None, "mosquitto exited"
                    await asyncio.sleep(0.01)
                else:
                    writer.close()
                    return

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def first_state(self) -> str:
        """The topic of the first state published to it (states are retained: one published before counts)."""
        async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"snippets-{self.port}") as client:
            await client.subscribe("+/+/state")
            async for message in client.messages:
                return str(message.topic)
        raise AssertionError("the broker went away")


@dataclass
class Step:
    """One command of a block: what it printed and how it ended."""

    command: str
    returncode: int | None
    stdout: str = ""
    stderr: str = ""

    def __str__(self) -> str:
        return f"$ {self.command}\n[exit {self.returncode}]\n{self.stdout}{self.stderr}"


@dataclass
class Running:
    step: Step
    process: asyncio.subprocess.Process


class Place:
    """Where one block runs: its directory (with :data:`FILES`), the endpoints that stand in for
    :data:`ENDPOINTS` (new buses and a new broker for each line: the lines of a block are alternatives
    that may run at once), and what it left running."""

    def __init__(self, directory: Path, secrets: Secrets, stack: contextlib.AsyncExitStack) -> None:
        self.directory = directory
        self.secrets = secrets
        self.stack = stack
        self.steps: list[Step] = []
        self.running: list[Running] = []
        self.broker: Broker | None = None
        self._block_port = free_port()
        self._line: dict[str, str] = {}
        self._ptys = 0
        directory.mkdir()
        provide_files(directory, secrets)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "SSL_CERT_FILE": str(self.secrets.ca),  # the system's CAs, as far as the snippets know
        }

    def next_line(self) -> None:
        self._line, self.broker = {}, None

    async def _bus(self, serve: str) -> str:
        sim = SimBus([MeterModel(a, t) for a, t in METERS.items()], baud=0, turnaround=0.002)
        server = await self.stack.enter_async_context(SimServer(sim))
        if serve == "pty":
            self._ptys += 1
            return await server.start_pty(self.directory / f"tty-{self._ptys}")
        host, port = await server.start_tcp()
        return f"tcp://{host}:{port}"

    async def _broker(self) -> Broker:
        if self.broker is None:
            self.broker = Broker(self.directory, self.secrets)
            self.stack.push_async_callback(self.broker.stop)
            await self.broker.start()
        return self.broker

    async def endpoint(self, placeholder: str) -> str:
        if placeholder not in self._line:
            match placeholder:
                case "/dev/ttyUSB0":
                    found = await self._bus("pty")
                case "tcp://gw-1:4001" | "tcp://gateway:4001":
                    found = await self._bus("tcp")
                case "127.0.0.1:4001":
                    found = f"127.0.0.1:{self._block_port}"
                case "/tmp/ekm-bus":
                    found = str(self.directory / "ekm-bus")
                case "mqtt://broker:1883":
                    found = f"mqtt://127.0.0.1:{(await self._broker()).port}"
                case "mqtts://broker:8883" | "mqtts://broker.example.org:8883":
                    found = f"mqtts://localhost:{(await self._broker()).tls_port}"
                case "/etc/ekm-async/" | "/var/lib/ekm-async/":
                    found = f"{self.directory}/"
                case _:
                    raise AssertionError(f"no endpoint for {placeholder}")
            self._line[placeholder] = found
        return self._line[placeholder]

    async def substitute(self, text: str) -> str:
        for placeholder in ENDPOINTS:
            if placeholder in text:
                text = text.replace(placeholder, await self.endpoint(placeholder))
        return text

    # -----------------------------------------------------------------------------------------------

    async def _spawn(self, *argv: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.directory,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: bash and the command it runs get the SIGINT
        )

    async def _finish(self, step: Step, process: asyncio.subprocess.Process) -> Step:
        try:
            async with asyncio.timeout(GUARD):
                out, err = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, err = await process.communicate()
            step.stderr += f"[hung: killed after {GUARD:g} s]\n"
        step.returncode = process.returncode
        step.stdout += out.decode(errors="replace")
        step.stderr += err.decode(errors="replace")
        return step

    async def run(self, command: str, *argv: str) -> bool:
        """Run a command to its end; whether it succeeded."""
        step = await self._finish(Step(command, None), await self._spawn(*(argv or ("bash", "-c", command))))
        self.steps.append(step)
        return step.returncode == 0

    async def start(self, command: str, subcommand: str) -> bool:
        """Start a long-running command and wait until it is ready; whether it is."""
        process = await self._spawn("bash", "-c", command)
        step = Step(command, None)
        self.steps.append(step)
        self.running.append(Running(step, process))
        ready = asyncio.ensure_future(self._ready(step, process, subcommand))
        ended = asyncio.ensure_future(process.wait())
        await asyncio.wait({ready, ended}, timeout=GUARD, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if not ready.done():
            ready.cancel()
            step.stderr += "[exited before it was ready]\n" if process.returncode is not None else "[not ready]\n"
            return False
        return ready.result()

    async def _ready(self, step: Step, process: asyncio.subprocess.Process, subcommand: str) -> bool:
        if subcommand == "poll":  # prints its table when it ends: what shows it works is the broker
            if self.broker is None:
                step.stderr += "[no way to tell it is ready: poll without --count or --mqtt]\n"
                return False
            await self.broker.first_state()
            return True
        assert process.stdout is not None
        first = (await process.stdout.readline()).decode()
        step.stdout += first
        if not first.startswith({"simulate": "ready ", "serve": "serving ", "run": "running "}[subcommand]):
            return False
        if url := re.search(r"serving (https?://\S+/)", first):
            await self._open_page(url[1].replace("0.0.0.0", "127.0.0.1"))
        if subcommand == "run" and self.broker is not None:
            await self.broker.first_state()
        return True

    async def _open_page(self, url: str) -> None:
        """What the text says to do next: open the page it serves."""
        tls = ssl.create_default_context(cafile=self.secrets.ca)
        async with aiohttp.ClientSession() as http, http.get(url, ssl=tls) as page:
            assert page.status == 200, (url, page.status)
            assert page.content_type == "text/html", (url, page.content_type)

    async def stop_all(self) -> None:
        """Ctrl-C to everything still running, the last started first."""
        for running in reversed(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGINT)
            await self._finish(running.step, running.process)


async def run_lines(place: Place, lines: list[str]) -> None:
    """A sh block's runnable lines, in order; each ``&&`` part as a command of its own."""
    try:
        for line in lines:
            place.next_line()
            for part in line.split(" && "):
                command = await place.substitute(part)
                words = shlex.split(command, comments=True)
                subcommand = words[1] if len(words) > 1 and words[0] == "ekm-async" else ""
                if subcommand == "serve" and "--port" not in words:
                    command = command.replace("ekm-async serve", "ekm-async serve --port 0", 1)
                if subcommand == "run":
                    free_web_port(place.directory / words[words.index("--config") + 1])
                long_running = subcommand in ("serve", "run", "simulate") or (
                    subcommand == "poll" and "--count" not in words
                )
                ok = await (place.start(command, subcommand) if long_running else place.run(command))
                if not ok:
                    return
    finally:
        await place.stop_all()


def free_web_port(config: Path) -> None:
    """The config's web service on any free port (the default, 8080, may be taken on this machine)."""
    text = config.read_text()
    if re.search(r"^port = \d+", text, re.M):
        text = re.sub(r"^port = \d+", "port = 0", text, count=1, flags=re.M)
    else:
        text = text.replace("[web]\n", "[web]\nport = 0\n", 1)
    config.write_text(text)


async def run_block(block: Block, place: Place) -> list[Step]:
    if block.lang == "python":
        (place.directory / "snippet.py").write_text(await place.substitute(block.text))
        await place.run("python snippet.py", sys.executable, "snippet.py")
    elif block.lang == "toml":
        (place.directory / "ekm.toml").write_text(await place.substitute(block.text))
        await run_lines(place, ["ekm-async config check ekm.toml", "ekm-async run --config ekm.toml"])
    else:
        await run_lines(place, [line for line in command_lines(block.text) if is_command(line)])
    return place.steps


async def run_all(todo: list[Block], directory: Path, secrets: Secrets) -> dict[str, list[Step]]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(n: int, block: Block) -> list[Step]:
        async with gate, contextlib.AsyncExitStack() as stack:
            return await run_block(block, Place(directory / f"block-{n}", secrets, stack))

    results = await asyncio.gather(*(one(n, block) for n, block in enumerate(todo)))
    return {block.id: steps for block, steps in zip(todo, results, strict=True)}


def make_secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    directory = tmp_path_factory.mktemp("snippet-secrets")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    made = Secrets(directory / "ca.pem", directory / "cert.pem", directory / "key.pem", directory / "passwd")
    ca.cert_pem.write_to_path(str(made.ca))
    server.cert_chain_pems[0].write_to_path(str(made.cert))
    server.private_key_pem.write_to_path(str(made.key))
    made.passwords.write_text("")
    passwd = find("mosquitto_passwd", "mosquitto")
    subprocess.run([passwd, "-b", str(made.passwords), MQTT_USER, MQTT_PASSWORD], check=True, capture_output=True)
    return made


@early("snippets")
def run_every_block(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Step]]:
    """Every runnable block, run side by side (most of the time is processes starting or waiting), from
    the session's start, beside the other tests."""
    secrets = make_secrets(tmp_path_factory)
    return asyncio.run(run_all(runnable(), tmp_path_factory.mktemp("snippets"), secrets))


@pytest.fixture(scope="module")
def ran(early_runs: EarlyRuns) -> dict[str, list[Step]]:
    result: dict[str, list[Step]] = early_runs.result("snippets")
    return result


# ---------------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("block", runnable(), ids=lambda b: b.id)
def test_the_snippet_runs_as_written(ran: dict[str, list[Step]], block: Block) -> None:
    steps = ran[block.id]
    report = f"{block.doc}:{block.line}\n" + "\n".join(map(str, steps))
    assert steps, report
    for step in steps:
        assert step.returncode == 0, report
    if block.lang == "python":
        assert steps[0].stderr == "", report
    stdout = "".join(step.stdout for step in steps)
    for pattern in EXPECTED[block.id]:
        assert re.search(pattern, stdout, re.M), f"no line matches {pattern!r}\n{report}"


@pytest.mark.parametrize("line", synopses())
def test_the_synopsis_matches_the_parser(line: str) -> None:
    assert synopsis_problems(line) == []


def test_a_synopsis_that_drifted_is_caught() -> None:
    assert synopsis_problems("ekm-async poll URL [--intervals S]") == ["poll: no option --intervals"]
    assert synopsis_problems("ekm-async simulate [--baud 9600|4800]") == [
        "simulate --baud: '4800' is not one of [9600, 0]"
    ]
    assert synopsis_problems("ekm-async frobnicate [--now]") == ["no subcommand 'frobnicate'"]
    assert synopsis_problems("ekm-async config example | ekm-async config check FILE") == []


def test_every_block_is_run_or_skipped_for_a_reason() -> None:
    ids = [block.id for block in blocks()]
    assert len(ids) == len(set(ids)), "two blocks under one heading in one language: give them headings"
    assert set(EXPECTED) == {block.id for block in runnable()}, "every block run says what it must print"
    commands = {line for _, line in sh_lines()}
    assert {key for key in SKIPPED if key not in ids} <= commands, "a reason for a block or line no longer there"
    for block in blocks():
        if block.lang == "sh" and block.id not in SKIPPED:
            others = [line for line in command_lines(block.text) if not line.startswith("ekm-async ")]
            assert set(others) <= set(SKIPPED), f"{block.id}: the runner runs only ekm-async: {others}"
    for block in blocks():
        if block.lang not in ("python", "sh", "toml"):  # drawings, hex dumps, diagrams: nothing to run
            assert not re.search(r"^(ekm-async |import |async |\$ )", block.text, re.M), block.id


def test_skipped_blocks_are_run_by_another_test() -> None:
    for block, (test_file, evidence) in RUN_ELSEWHERE.items():
        assert block in SKIPPED
        assert evidence in (ROOT / test_file).read_text(), (block, test_file)


@pytest.mark.parametrize("placeholder", sorted(ENDPOINTS))
def test_every_substitution_is_for_a_placeholder_of_the_text(placeholder: str) -> None:
    assert any(placeholder in block.text for block in runnable())
