"""The command line against the kernel: ``pytcp demo``, and ``pytcp serve`` started inside a network
namespace the test creates, driven from that namespace with curl, ping and kernel sockets, read through
its control socket and stopped with SIGTERM. Argument errors need no privileges and run anywhere.

Every subprocess runs with a timeout and is stopped by its PID; only 198.18.0.0/15 addresses are used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytcp.config import TCPConfig
from pytcp.netns import NETNS_RUN_DIR, IpCommandError, NetNamespace, in_namespace, run_ip
from pytcp.services import CHUNK, PATTERN_PERIOD, PATTERN_SEED, body_chunks, control_request

STACK = "198.18.0.2"
TUN = "pt0"
ECHO, DISCARD, HTTP = 7, 9, 8080
STEP = 20.0  # bound for one command or exchange; they take milliseconds, CI may be loaded
DEMO_TIMEOUT = 120.0
PYTCP = [sys.executable, "-m", "pytcp"]
#: Drops the two capabilities pytcp needs from the bounding set, so even root runs without them.
UNPRIVILEGED = ["setpriv", "--bounding-set=-net_admin,-sys_admin", "--inh-caps=-net_admin,-sys_admin"]


def run(cmd: list[str], timeout: float = STEP) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on timeout subprocess.run kills it (by PID) and raises TimeoutExpired."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def expected_body(length: int) -> bytes:
    """A /bytes/N body as the services module documents it, rebuilt independently."""
    pattern = random.Random(PATTERN_SEED).randbytes(PATTERN_PERIOD)
    return (pattern * (length // PATTERN_PERIOD + 1))[:length]


def test_http_body_chunks_follow_the_pattern_everywhere() -> None:
    """Every chunk is full-sized and continues the pattern, from every offset in the period (chunk k starts
    at offset k * CHUNK mod PERIOD; the chunks are views, so walking 4400 of them is cheap)."""
    pattern = random.Random(PATTERN_SEED).randbytes(PATTERN_PERIOD)
    length = 4400 * CHUNK + 123
    chunks = list(body_chunks(length))
    assert [len(chunk) for chunk in chunks] == [CHUNK] * 4400 + [123]
    starts = {index * CHUNK % PATTERN_PERIOD: index for index in range(len(chunks))}
    # The first chunks, the first one past a wrap of the period, and the one at the ring's far end.
    for offset in (0, CHUNK % PATTERN_PERIOD, min(set(starts) - {0}), max(starts)):
        rotated = pattern[offset:] + pattern[:offset]
        expected = (rotated * (CHUNK // PATTERN_PERIOD + 2))[: len(chunks[starts[offset]])]
        assert chunks[starts[offset]] == expected, offset
    assert b"".join(chunks[:3]) == expected_body(3 * CHUNK)


# -- arguments (no privileges needed) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--address", "300.1.1.1"],
        ["serve", "--peer-address", "198.18.0.2"],  # the same as --address
        ["serve", "--address", "10.0.0.2"],  # outside 198.18.0.0/15
        ["serve", "--prefix-length", "24", "--address", "198.18.0.255"],  # the broadcast address
        ["serve", "--prefix-length", "33"],
        ["serve", "--echo", "0"],
        ["serve", "--http", "65536"],
        ["serve", "--echo", "7", "--http", "7"],
        ["serve", "--mtu", "100"],
        ["serve", "--tun", "a-name-that-is-too-long"],
        ["serve", "--set", "no_such_knob=1"],
        ["serve", "--set", "msl"],
        ["serve", "--set", "msl=forever"],
        ["serve", "--config", "/nonexistent/pytcp.toml"],
        ["serve", "--pcap", "/nonexistent/capture.pcap"],
        ["demo", "--msl", "0"],
        ["connections", "--bogus"],
    ],
    ids=lambda args: " ".join(args),
)
def test_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    proc = run([*PYTCP, *args])
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    # argparse reports unknown options from the top-level parser ("pytcp: error: ..."), the rest per command.
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("pytcp") and "error: " in proc.stderr


def test_config_lists_every_knob() -> None:
    proc = run([*PYTCP, "config"])
    assert proc.returncode == 0, proc.stderr
    knobs = TCPConfig().describe()
    for name, _, _ in knobs:
        assert f"\n{name} = " in f"\n{proc.stdout}", name
    listed = json.loads(run([*PYTCP, "config", "--json"]).stdout)
    assert [(k["name"], k["default"]) for k in listed] == [(name, value) for name, value, _ in knobs]


def test_control_client_without_server_exits_1(tmp_path: Path) -> None:
    proc = run([*PYTCP, "counters", "--control", str(tmp_path / "none.sock")])
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "pytcp serve" in proc.stderr


# -- demo ----------------------------------------------------------------------------------------------


@pytest.mark.netns
def test_demo_draws_handshake_to_time_wait(privileged: None) -> None:
    process = subprocess.Popen([*PYTCP, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=DEMO_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STEP)
    assert process.returncode == 0, out + err
    lines = out.splitlines()

    def row(*parts: str) -> str:
        found = [line for line in lines if all(part in line for part in parts)]
        assert found, f"no line with {parts} in:\n{out}"
        return found[0]

    row("SYN-SENT*", "-- SYN seq=x (", "SYN-RECEIVED")
    row("ESTABLISHED*", "SYN+ACK seq=y (", "ack=x+1 (")
    row("-- ACK seq=x+1", "ack=y+1", "ESTABLISHED")
    row("FIN-WAIT-1*", "FIN+ACK", "CLOSE-WAIT")  # exchange 1: the kernel closes first
    row("[ss]", "TIME-WAIT")
    row("TIME-WAIT*", "FIN+ACK", "LAST-ACK")
    row("CLOSE-WAIT*", "FIN+ACK", "FIN-WAIT-1")  # exchange 2: pytcp closes first
    row("LAST-ACK*", "FIN+ACK", "TIME-WAIT")
    row("MSL is 0.5 s")
    row("pytcp held TIME-WAIT for")
    assert lines[-1] == "demo OK"
    leftovers = [name for name in os.listdir(NETNS_RUN_DIR) if name.startswith(f"pytcp-demo-{process.pid}-")]
    assert not leftovers, leftovers


@pytest.mark.netns
def test_commands_without_privileges_exit_1(netns: NetNamespace) -> None:
    for command in (["serve", "--tun", TUN], ["demo"]):
        proc = netns.run([*UNPRIVILEGED, *PYTCP, *command], timeout=STEP, check=False)
        assert proc.returncode == 1, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and "CAP_NET_ADMIN" in proc.stderr


# -- serve ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    ready: str
    control: Path
    ns: NetNamespace

    def kernel_socket(self, port: int) -> socket.socket:
        with in_namespace(self.ns):
            sock = socket.create_connection((STACK, port), timeout=STEP)
        sock.settimeout(STEP)
        return sock

    def pytcp(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([*PYTCP, *args, "--control", str(self.control)])


def device_exists(ns: NetNamespace) -> bool:
    try:
        run_ip("link", "show", "dev", TUN, netns=ns.name)
    except IpCommandError:
        return False
    return True


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else ""


@pytest.fixture
def server(netns: NetNamespace, tmp_path: Path) -> Iterator[Server]:
    control = tmp_path / "control.sock"
    command = [*PYTCP, "serve", "--tun", TUN, "--echo", str(ECHO), "--discard", str(DISCARD)]
    command += ["--http", str(HTTP), "--control", str(control), "--set", "msl=0.5"]
    process = netns.popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line(process, STEP)
        if not line:
            process.kill()
            _, err = process.communicate(timeout=STEP)
            pytest.fail(f"serve printed no ready line: {err}")
        yield Server(process, line, control, netns)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STEP)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STEP)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.netns
def test_serve_prints_one_ready_line(server: Server) -> None:
    assert server.ready == (
        f"ready: tun {TUN} {STACK} <-> 198.18.0.1, echo {ECHO}, discard {DISCARD}, http {HTTP}, "
        f"control {server.control}\n"
    )
    assert device_exists(server.ns)


@pytest.mark.netns
def test_serve_http_bytes_match_with_curl(server: Server) -> None:
    length = 1_000_000
    curl = f"curl -sS --fail --max-time {STEP:.0f} http://{STACK}:{HTTP}/bytes/{length} | sha256sum"
    proc = server.ns.run(["sh", "-c", curl], timeout=STEP + 5)
    assert proc.stdout.split()[0] == hashlib.sha256(expected_body(length)).hexdigest(), proc.stderr
    # Keep-alive: curl reuses one connection for both URLs; /missing is a 404.
    urls = [f"http://{STACK}:{HTTP}/", f"http://{STACK}:{HTTP}/missing"]
    proc = server.ns.run(["curl", "-sS", "-v", "--max-time", f"{STEP:.0f}", *urls], timeout=STEP + 5)
    assert "<h1>pytcp</h1>" in proc.stdout and "not found" in proc.stdout
    assert "HTTP/1.1 404 Not Found" in proc.stderr
    assert "Re-using existing connection" in proc.stderr or "Reusing existing" in proc.stderr, proc.stderr


@pytest.mark.netns
def test_serve_http_pipelining_and_connection_close(server: Server) -> None:
    with server.kernel_socket(HTTP) as sock:
        sock.sendall(
            b"GET /bytes/5 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /bytes/3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        received = bytearray()
        while chunk := sock.recv(65536):  # the server closes after the third response
            received += chunk
    responses = bytes(received).split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(responses) == 3
    assert responses[0].endswith(b"\r\n\r\n" + expected_body(5)) and b"Content-Length: 5\r\n" in responses[0]
    assert responses[1].endswith(b"\r\n\r\n") and b"Connection: keep-alive" in responses[1]
    assert responses[2].endswith(b"\r\n\r\n" + expected_body(3)) and b"Connection: close\r\n" in responses[2]
    with server.kernel_socket(HTTP) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: RFC 9112 3.2 says 400
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 Bad Request\r\n")


@pytest.mark.netns
def test_serve_echo_and_discard(server: Server) -> None:
    data = os.urandom(256 * 1024)
    with server.kernel_socket(ECHO) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        echoed = bytearray()
        while chunk := sock.recv(65536):
            echoed += chunk
    assert echoed == data
    with server.kernel_socket(DISCARD) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # nothing comes back, then the server's FIN


@pytest.mark.netns
def test_serve_answers_ping(server: Server) -> None:
    proc = server.ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", STACK], timeout=STEP, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0% packet loss" in proc.stdout
    counters = json.loads(server.pytcp("counters", "--json").stdout)
    assert counters["mib"]["InEchos"] >= 3 and counters["mib"]["OutEchoReps"] >= 3


@pytest.mark.netns
def test_serve_control_socket(server: Server) -> None:
    with server.kernel_socket(ECHO) as sock:
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        client = f"198.18.0.1:{sock.getsockname()[1]}"
        table = server.pytcp("connections")
        assert table.returncode == 0, table.stderr
        assert table.stdout.startswith("State")
        rows = [line.split() for line in table.stdout.splitlines()]
        assert ["LISTEN", "0", "128", f"{STACK}:{ECHO}", "*:*"] in [row[:5] for row in rows]
        assert any(row[0] == "ESTABLISHED" and row[4] == client for row in rows), table.stdout
        listed = json.loads(server.pytcp("connections", "--json").stdout)
        assert {"state": "ESTABLISHED", "remote": client}.items() <= next(
            row for row in listed if row["remote"] == client
        ).items()
    counters = server.pytcp("counters")
    assert counters.returncode == 0, counters.stderr
    values = dict(line.split() for line in counters.stdout.splitlines() if not line.startswith("#"))
    assert int(values["PassiveOpens"]) >= 1 and int(values["InSegs"]) > 0
    assert "#mib" in counters.stdout and "#runtime" in counters.stdout
    with pytest.raises(ValueError, match="unknown command"):
        control_request(str(server.control), "bogus")


@pytest.mark.netns
def test_serve_sigterm_closes_connections_and_removes_device(server: Server) -> None:
    with server.kernel_socket(ECHO) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        server.process.send_signal(signal.SIGTERM)
        assert sock.recv(1) == b"", "no FIN from the server on SIGTERM"
    assert server.process.wait(STEP) == 0
    assert server.process.stdout is not None and server.process.stdout.read() == ""  # the ready line only
    deadline = time.monotonic() + STEP
    while device_exists(server.ns):
        assert time.monotonic() < deadline, "the TUN device outlived serve"
        time.sleep(0.05)
    assert not server.control.exists()
