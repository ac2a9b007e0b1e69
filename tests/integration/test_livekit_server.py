"""The LiveKit server as the fixtures run it: loopback only, keys enforced and kept off its
command line, reusable install."""

from __future__ import annotations

import asyncio
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from livekit import api
from support.infra import LIVEKIT_BIN, REPO_ROOT, LiveKitServer

pytestmark = pytest.mark.timeout(120)


def _process_sockets(pid: int) -> list[tuple[str, str, int, str]]:
    """(proto, local ip, port, state) of every inet socket the process holds.

    Read from the kernel's tables, matched by socket inode: no connection is made.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        table = Path(f"/proc/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            ip_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(ip_hex)
            if proto.endswith("6"):
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                ip = socket.inet_ntop(socket.AF_INET6, words)
            else:
                ip = socket.inet_ntoa(raw[::-1])
            found.append((proto, ip, int(port_hex, 16), fields[3]))
    return found


def test_sockets_are_on_loopback_only(livekit_server: LiveKitServer) -> None:
    sockets = _process_sockets(livekit_server.process.proc.pid)
    listeners = [
        (p, ip, port) for p, ip, port, state in sockets if p.startswith("tcp") and state == "0A"
    ]
    # signalling/API on loopback, and no ICE/TCP listener (it would take every interface)
    assert listeners == [("tcp", "127.0.0.1", livekit_server.port)], sockets
    udp = [(p, ip, port) for p, ip, port, _ in sockets if p.startswith("udp")]
    assert ("udp", "127.0.0.1", livekit_server.udp_port) in udp, sockets
    assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in udp), udp


async def test_server_api_requires_the_right_keys(livekit_server: LiveKitServer) -> None:
    good = api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    )
    bad = api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, "wrong-secret-wrong-secret-wrong-secret"
    )
    try:
        name = f"api-{int(time.time() * 1000)}"
        room = await asyncio.wait_for(good.room.create_room(api.CreateRoomRequest(name=name)), 10)
        assert room.name == name
        listed = await asyncio.wait_for(good.room.list_rooms(api.ListRoomsRequest()), 10)
        assert name in [r.name for r in listed.rooms]
        with pytest.raises(api.TwirpError) as info:
            await asyncio.wait_for(bad.room.list_rooms(api.ListRoomsRequest()), 10)
        assert info.value.status == 401
        await asyncio.wait_for(good.room.delete_room(api.DeleteRoomRequest(room=name)), 10)
    finally:
        await good.aclose()
        await bad.aclose()


def test_the_secret_comes_from_a_key_file_and_shows_nowhere(livekit_server: LiveKitServer) -> None:
    argv = Path(f"/proc/{livekit_server.process.proc.pid}/cmdline").read_bytes().split(b"\0")
    key_file = Path(argv[argv.index(b"--key-file") + 1].decode())
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert livekit_server.api_secret in key_file.read_text()
    secret = livekit_server.api_secret.encode()
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if secret in _read(p)]
    assert secret not in livekit_server.process.log_path.read_bytes()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process is gone
        return b""


async def test_livekits_placeholder_dev_keys_are_refused(livekit_server: LiveKitServer) -> None:
    # Development mode falls back to devkey/secret only when no keys are configured.
    placeholder = api.LiveKitAPI(livekit_server.http_url, "devkey", "secret")
    try:
        with pytest.raises(api.TwirpError) as info:
            await asyncio.wait_for(placeholder.room.list_rooms(api.ListRoomsRequest()), 10)
        assert info.value.status == 401
    finally:
        await placeholder.aclose()


def test_install_script_reuses_the_binary(livekit_server: LiveKitServer) -> None:
    before = LIVEKIT_BIN.stat().st_mtime
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "install_livekit_server.sh")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "present" in proc.stderr
    assert time.monotonic() - t0 < 10
    assert LIVEKIT_BIN.stat().st_mtime == before
