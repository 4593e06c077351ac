"""`mpfota serve` against malformed requests and cheap attacks (issue 15), over raw sockets.

Each malformed request gets a 4xx with a reason, a log line, and leaves the connection in a
state where nothing of it is read as a second request. A ban counts only downloads served in
full; ownership comes from the operator or such a download, never from a check; device rows
exist only for known projects; a device with a key must send it.
"""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urlsplit

import pytest
from fixtures_server import LoggedServer
from mpfota_host import cli
from test_server import FW, IMEI, Clock, P, code_of, libfota2, pkg, request

SIZE = 5000


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def srv(tmp_path, clock, state_db):
    s = LoggedServer(tmp_path / "data", clock=clock, db=state_db).start()
    s.store.publish(P, FW, "001.000.001", file=pkg(tmp_path, "fw.bin", SIZE))
    yield s
    s.stop()


def raw(base: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are and read until the server closes (or `timeout`)."""
    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
    return out


def statuses(answer: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


def get(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


# --- malformed requests -------------------------------------------------------------------


def test_too_many_query_fields_is_400_with_a_reason(srv):
    target = libfota2() + "".join(f"&f{i}=1" for i in range(70))
    status, _, body = request(srv.base, target)
    assert (status, code_of(body)) == (400, 3)
    # on a kept-alive connection the next request is answered as usual
    answer = raw(srv.base, get(target) + get("/healthz", "Connection: close\r\n"))
    assert statuses(answer) == [400, 200] and answer.endswith(b"ok\n")
    assert "bad query" in srv.last_line(1) and "64" in srv.last_line(1)


@pytest.mark.parametrize("length", ["abc", "-1", "1 2", "99999999999999999999999"])
def test_bad_content_length_is_400_and_closes(srv, length):
    t0 = time.monotonic()
    answer = raw(srv.base, f"POST {libfota2()} HTTP/1.1\r\nHost: t\r\nContent-Length: {length}"
                           f"\r\n\r\n".encode() + get("/healthz"))
    assert time.monotonic() - t0 < 3  # answered at once, not after a read timeout
    assert statuses(answer) == [400]  # and the GET after it is not answered: closed
    assert b"ok\n" not in answer
    line = srv.last_line(1)
    assert " 400 " in line and "bad request:" in line and "Content-Length" in line


def test_chunked_post_body_is_a_body_not_a_request(srv):
    smuggled = get("/files/anything")
    body = f"{len(smuggled):x}\r\n".encode() + smuggled + b"\r\n0\r\n\r\n"
    answer = raw(srv.base, f"POST {libfota2(version='2012.001.001')} HTTP/1.1\r\nHost: t\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n".encode() + body
                 + get("/healthz", "Connection: close\r\n"))
    # two answers: the check (27) and the health check; the GET inside the body is no request
    assert statuses(answer) == [404, 200]
    assert answer.endswith(b"ok\n") and b"code\": 27" in answer
    assert len(srv.wait_lines(2)) == 2 and "/files/" not in "".join(srv.lines)


def test_oversized_post_body_is_413(srv):
    head = f"POST {libfota2()} HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n"
    answer = raw(srv.base, head.encode() + b"x" * 70000
                 + get("/healthz", "Connection: close\r\n"))
    assert statuses(answer) == [413, 200]  # the body was skipped, the next request read
    assert "body over 65536 bytes" in srv.last_line(1)


def test_bad_request_line_and_method(srv):
    assert statuses(raw(srv.base, b"GET /healthz HTTP/1.1 extra\r\n\r\n")) == [400]
    assert request(srv.base, "/healthz", method="DELETE")[0] == 405
    assert "method not allowed" in srv.last_line(2)


# --- what counts towards the daily limit ----------------------------------------------------


def test_every_whole_file_range_form_counts(srv, clock):
    """Range forms that still send the whole file from byte 0 count like a plain GET."""
    forms = ["bytes=1-,0-", "bytes=0-", f"bytes=0-{SIZE - 1}", f"bytes=-{SIZE}", "bytes=0-1,3-4",
             "bytes=junk"]
    for form in forms:
        status, _, body = request(srv.base, libfota2(), {"Range": form})
        assert status in (200, 206) and len(body) == SIZE, form
    assert srv.store.device(IMEI, clock()).offers_today == len(forms)
    status, _, body = request(srv.base, libfota2(), {"Range": "bytes=1-,0-"})
    assert (status, code_of(body)) == (429, 40)


def test_partial_answers_never_ban(srv, clock):
    """Seven one-byte requests used to ban a device; a part of the file is not a download."""
    for form in ["bytes=0-0"] * 7 + ["bytes=100-", "bytes=-1", f"bytes={SIZE}-"]:
        assert request(srv.base, libfota2(), {"Range": form})[0] in (206, 416), form
    assert srv.store.device(IMEI, clock()).offers_today == 0
    assert srv.store.device(IMEI, clock()).ban is None
    assert request(srv.base, libfota2())[0] == 200


def test_aborted_download_does_not_count(tmp_path, clock, state_db):
    srv = LoggedServer(tmp_path / "data", clock=clock, db=state_db).start()
    try:
        srv.store.publish(P, FW, "001.000.001", file=pkg(tmp_path, "big.bin", 16 << 20))
        u = urlsplit(srv.base)
        for n in range(3):
            s = socket.create_connection((u.hostname, u.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(get(libfota2()))
            assert s.recv(100).startswith(b"HTTP/1.1 200")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            s.close()  # reset: the transfer breaks
            assert "aborted" in srv.last_line(n + 1)
        deadline = time.monotonic() + 5
        while srv.store.device(IMEI, clock()).offers_today and time.monotonic() < deadline:
            time.sleep(0.02)  # the refund runs after the abort's log line
        dev = srv.store.device(IMEI, clock())
        assert (dev.offers_today, dev.project) == (0, None)
    finally:
        srv.stop()


# --- device rows, ownership, keys -------------------------------------------------------------


def test_unknown_projects_leave_no_device_rows(srv):
    for i in range(40):
        assert code_of(request(srv.base, libfota2(imei=f"8600000000{i:05d}",
                                                  project=f"NOPE{i}"))[2]) == 25
    assert srv.store.devices() == []
    assert request(srv.base, libfota2(version="2012.001.001"))[0] == 404
    assert [d.id for d in srv.store.devices()] == [IMEI]


def test_a_check_never_claims_a_device(srv, tmp_path, clock):
    srv.store.publish("OTHERKEY", FW, "001.000.001", file=pkg(tmp_path, "o.bin"))
    # checks that do not download in full: up to date, HEAD, a part
    assert request(srv.base, libfota2(project="OTHERKEY", version="2012.001.001"))[0] == 404
    assert request(srv.base, libfota2(project="OTHERKEY"), method="HEAD")[0] == 200
    assert request(srv.base, libfota2(project="OTHERKEY"), {"Range": "bytes=0-9"})[0] == 206
    assert srv.store.device(IMEI, clock()).project is None
    # the real device downloads under its own project: that makes it the owner
    assert request(srv.base, libfota2())[0] == 200
    assert srv.store.device(IMEI, clock()).project == P
    assert code_of(request(srv.base, libfota2(project="OTHERKEY"))[2]) == 17


def test_operator_allow_list_sets_ownership(srv, tmp_path):
    srv.store.publish("OTHERKEY", FW, "001.000.001", file=pkg(tmp_path, "o.bin"))
    assert cli.main(["server", "allow", "--data", str(tmp_path / "data"), "--project", P,
                     IMEI]) == 0
    assert code_of(request(srv.base, libfota2(project="OTHERKEY"))[2]) == 17
    assert request(srv.base, libfota2())[0] == 200


def test_device_key(srv, tmp_path, capsys):
    data = str(tmp_path / "data")
    assert cli.main(["server", "key", "--data", data, IMEI, "SN-0042"]) == 0
    assert "must send device_key" in capsys.readouterr().out
    for target in (libfota2(), libfota2() + "&device_key=", libfota2() + "&device_key=SN-0041"):
        status, _, body = request(srv.base, target)
        assert (status, code_of(body)) == (403, 3), target
    assert "device_key missing or wrong" in srv.last_line(3)
    assert "SN-004" not in "".join(srv.lines)  # keys are not logged
    assert srv.store.device(IMEI) is None  # refused requests leave no trace on the device
    assert request(srv.base, libfota2() + "&device_key=SN-0042")[0] == 200
    # update.lua's own form: device_key before firmware_name
    q = (f"/api/site/firmware_upgrade?project_key={P}&imei={IMEI}&device_key=SN-0042"
         f"&firmware_name={FW}&core_version=17&dfota=1&version=1.0.0")
    assert request(srv.base, q)[0] == 200
    # other devices are not affected; the key can be removed
    assert request(srv.base, libfota2(imei="867208320151691"))[0] == 200
    assert cli.main(["server", "key", "--data", data, "--remove", IMEI]) == 0
    assert request(srv.base, libfota2())[0] == 200
    assert cli.main(["server", "key", "--data", data, IMEI]) == 2
    assert cli.main(["server", "key", "--data", data, "bad id", "K"]) == 2
    assert "not a device id" in capsys.readouterr().err


def test_ban_and_unban_commands_and_json_devices(srv, tmp_path, capsys):
    data = str(tmp_path / "data")
    request(srv.base, libfota2())
    srv.wait_lines(1)
    assert cli.main(["server", "ban", "--data", data, IMEI]) == 0
    assert code_of(request(srv.base, libfota2())[2]) == 21
    capsys.readouterr()
    assert cli.main(["server", "devices", "--data", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ban"] == "admin"
    assert cli.main(["server", "unban", "--data", data, IMEI]) == 0
    assert request(srv.base, libfota2())[0] == 200
