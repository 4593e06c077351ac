"""Scenario 2 and its TCP command trigger (device/triggers/tcp.py) against a real TCP server.

The server is CPython (mpfota_host.scenarios.CommandServer) on 127.0.0.1; the board is the
virtual board running boards/unix/apps/scenario2.py; downloads come from real HTTP servers.
"""

from __future__ import annotations

import socket

from fixtures_triggers import BoardProcess, CommandServer, scenario_app
from mpfota_host import scenarios, vboard


def _data(events, name):
    return [e.data for e in events if e.data and e.data.get("event") == name]


def test_tcp_command_downloads_reboots_and_the_new_core_says_hello(tmp_path):
    o = scenarios.run(2, tmp_path / "board", settings={"RUN_FOR_MS": 3200})
    assert scenarios.check(2, o) == [], o.output
    ev = o.commands.events
    hellos = _data(ev, "hello")
    assert [h["core"] for h in hellos] == ["1.0.0", "2.0.0"]
    assert hellos[0]["project"] == "FOTA2_DEMO" and hellos[0]["version"] == "001.000.000"
    assert len(hellos[0]["id"]) == 15  # the board's IMEI
    # One command (the server sends none to the new core), accepted, then result 0 before the
    # reboot: the hello of the second connection comes after it.
    names = [e.data["event"] for e in ev if e.data]
    assert names == ["hello", "accepted", "result", "hello"]
    assert _data(ev, "result") == [{"event": "result", "code": 0}]
    assert [e.conn for e in ev] == [1, 1, 1, 2]
    out = o.output
    assert out.index("I/user.开始检查升级") < out.index("I/user.升级包下载成功,重启模块")
    assert "board: hard reset (exit 64)" in out
    assert "I/user.fota image in ota_1 confirmed" in out
    assert "脚本版本号 001.000.000 core版本号 2.0.0" in out


def test_second_command_refused_while_downloading_and_bad_messages_answered(tmp_path,
                                                                            http_server):
    flash = tmp_path / "board"
    vboard.init(flash, core_version="1.0.0")
    base = http_server.base
    slow = base + "/trickle?n=3000&ms=1"  # 3 s of body: a download that is still running
    with CommandServer() as cmds:
        app = scenario_app(2, tmp_path, SERVER_ADDR="127.0.0.1", SERVER_PORT=cmds.port,
                           RUN_FOR_MS=0)
        with BoardProcess(flash, app) as board:
            cmds.wait_event("hello", timeout=20)
            n = len(cmds.events)
            cmds.send({"fota": "true", "url": slow})
            cmds.wait_event("accepted", after=n)
            # A second command while the first download runs: refused, nothing started.
            n = len(cmds.events)
            cmds.send({"fota": "true", "url": base + "/blob/small"})
            assert cmds.wait(lambda e: e.data is not None, after=n).data == {"event": "busy"}
            board.wait_for("W/user.fota_task FOTA 正在运行，跳过本次请求")

            # Malformed messages: each answered with an error, nothing else happens.
            cases = [
                (b"{not json\n", "json"),
                (b"[1, 2]\n", "type"),
                (b'{"url": "http://x/y"}\n', "fota"),
                (b'{"fota": "true"}\n', "url"),
                (b'{"fota": "true", "url": 5}\n', "url"),
                (b'{"fota": "true", "url": "###"}\n', "url"),
                (b'{"fota": "true", "url": "http://x/", "version": 7}\n', "version"),
                (b"\xff\xfe\n", "json"),
                (b"x" * 1500 + b"\n", "too_long"),
            ]
            for raw, kind in cases:
                n = len(cmds.events)
                cmds.send(raw)
                reply = cmds.wait(lambda e: e.data is not None, after=n).data
                assert reply["event"] == "error" and reply["error"] == kind, (raw, reply)
                assert reply["detail"]
            # fota not "true": ignored, and said so.
            n = len(cmds.events)
            cmds.send({"fota": "false", "url": base + "/blob/small"})
            reply = cmds.wait(lambda e: e.data is not None, after=n).data
            assert reply["event"] == "ignored" and "false" in reply["reason"]
            # A message without a newline counts once the line goes quiet (LuatOS socket.rx).
            n = len(cmds.events)
            cmds.send(b"{no newline")
            reply = cmds.wait(lambda e: e.data is not None, after=n).data
            assert reply == {"event": "error", "error": "json", "detail": reply["detail"]}

            # The first download ends (its body is not an image: result 4), which frees the
            # guard: the next command is accepted on the same connection.
            assert cmds.wait_event("result", timeout=30).data == {"event": "result", "code": 4}
            n = len(cmds.events)
            cmds.send({"fota": "true", "url": base + "/status/404"})
            assert cmds.wait_event("accepted", after=n).data["url"] == base + "/status/404"
            assert cmds.wait_event("result", after=n).data["code"] == 4
            assert cmds.connections() == 1  # never dropped
            out = board.output
    assert "E/user.data_processing json error:" in out
    assert "E/user.tcp_trigger message longer than 1024 bytes" in out
    # Exactly two downloads reached the HTTP server: the slow one and the 404; the refused
    # command never did.
    hits = [r for r in http_server.requests if r.path in ("/trickle", "/blob/small", "/status/404")]
    assert [r.path for r in hits][-2:] == ["/trickle", "/status/404"]
    assert "/blob/small" not in [r.path for r in hits[-2:]]


def test_board_retries_until_the_server_is_up(tmp_path):
    # Nothing listens at first: the connection is refused (MicroPython only finds out on the
    # first write), the board logs it and tries again 5 s later, then says hello.
    flash = tmp_path / "board"
    vboard.init(flash, core_version="1.0.0")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    app = scenario_app(2, tmp_path, SERVER_ADDR="127.0.0.1", SERVER_PORT=port, RUN_FOR_MS=0)
    with BoardProcess(flash, app) as board:
        out = board.wait_for(f"W/user.tcp_trigger connect 127.0.0.1 {port} failed", timeout=20)
        assert "tcp_trigger connected" not in out
        with CommandServer(port=port) as cmds:
            hello = cmds.wait_event("hello", timeout=20).data
            assert hello["core"] == "1.0.0"
            board.wait_for(f"I/user.tcp_trigger connected 127.0.0.1 {port}")
