"""Conformance: LuatOS's own libfota2.lua (under Lua 5.4) against mpfota's libfota2 (unix port).

The LuatOS side is ../shared/reference/luatos/libfota2.lua, unchanged, run by lua5.4 with the
stand-ins of tests/luatos/standins.lua for the LuatOS globals it touches. The mpfota side is
device/libfota2.py in the MicroPython unix port (tests/luatos/conformance_dev.py).

- URL building: generated cases (boards x URLs x opts x globals), each requested twice with the
  same opts, as a periodic timer does. Compared: the method and URL of every call, or result 5.
- Transport outcomes: mpfota requests a real loopback server on a virtual board; the LuatOS
  side gets from its http stand-in what luat_http_client.c's FOTA mode reports for the same
  outcome (OUTCOMES says which C function decides it). Compared: the URL and method (as the
  server saw mpfota's request), the callback code, and the IoT platform diagnosis.

Every difference must be one of DIFFERENCES, whose text docs/libfota2.md must carry.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpserver as hs
import pytest
from fixtures_luatos import LuatOSServer
from mpdevice import module_path, run_function
from mpfota_host import paths

SHARED = paths.REPO.parent / "shared"
LUA_LIB = SHARED / "reference" / "luatos" / "libfota2.lua"
HERE = paths.TESTS / "luatos"
DOC = paths.REPO / "docs" / "libfota2.md"

pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"{SHARED} is absent: the LuatOS sources are not beside the repo"
)

# Every deliberate difference: key -> a phrase docs/libfota2.md must contain (its row says why).
DIFFERENCES = {
    "separator": "the missing separator is added",
    "id_rule": "the portable rule is the default",
    "nil_id": "never sends `nil`",
    "lua_error": "raises a Lua error inside `request()`",
    "core_label": "a core label without a leading `V`",
    "redirect": "redirects are followed",
}

# ------------------------------------------------------------------------- both sides


def lua_literal(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, bytes):
        return '"' + "".join("\\x%02x" % b for b in v) + '"'
    if isinstance(v, str):
        return lua_literal(v.encode())
    if isinstance(v, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(lua_literal(x) for x in v) + "}"
    raise TypeError(type(v))


def run_lua(cases: list[dict], tmp_path: Path) -> dict[str, list[str]]:
    """Run libfota2.lua on the cases; {case name: its trace lines}."""
    lua = shutil.which("lua5.4")
    assert lua, "lua5.4 is missing: `make setup` installs it (Debian package lua5.4)"
    src = tmp_path / "cases.lua"
    src.write_text("return " + lua_literal(cases) + "\n")
    proc = subprocess.run([lua, str(HERE / "run.lua"), str(HERE), str(LUA_LIB), str(src)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, list[str]] = {}
    name = None
    for line in proc.stdout.splitlines():
        if line.startswith("CASE\t"):
            name = line[5:]
            out[name] = []
        elif line != "END":
            out[name].append(line)
    return out


def lua_calls(trace: list[str]) -> list[list]:
    """The calls of one Lua trace as mpfota reports them: ["url", method, url] / ["ret", 5] /
    ["error", message]."""
    calls = []
    for line in trace:
        kind, _, rest = line.partition("\t")
        if kind == "REQUEST":
            method, url, fota = rest.split("\t")
            assert fota == "true", "libfota2.lua must ask for FOTA mode"
            calls.append(["url", method, url])
        elif kind == "RET" and rest == "5":
            calls.append(["ret", 5])
        elif kind == "ERROR":
            calls.append(["error", rest])
    return calls


def run_device(function: str, kwargs: dict, env: dict | None = None) -> str:
    env = dict(env or {})
    env["MICROPYPATH"] = module_path() + ":" + str(HERE)
    return run_function("conformance_dev", function, kwargs, env=env, heapsize="16m")


def device_prepare(cases: list[dict]) -> list[list]:
    out = run_device("prepare_cases", {"cases": [to_device(c) for c in cases]})
    got = [json.loads(x[5:]) for x in out.splitlines() if x.startswith("CASE ")]
    assert len(got) == len(cases), out[-2000:]
    return got


# ------------------------------------------------------------------------ URL building

G = {"PROJECT": "FOTA2_DEMO", "VERSION": "001.000.001", "PRODUCT_KEY": "pk123"}

# (name, hmeta.model(), rtos.version(), rtos.bsp(), imei, wlan mac, mcu unique id)
BOARDS = [
    ("air780", "Air780EHV", "V2012", "Air780EHV-1.8V", "868488076543218", None, b"\x3a\x2f\x9c"),
    ("air8000", "Air8000", "V2014", "Air8000", "860000000000009", "C8C2C6906511", b"\x01\x02"),
    ("air8101", "Air8101", "V1005", "Air8101", None, "C8C2C6906511", b"\x01\x02\x03"),
    ("air1601", "Air1601", "V0007", "Air1601", None, None, b"\x3a\x2f\x9c\x1b"),
    ("air1780", "Air1780", "V0007", "Air1780", None, "0211223344AA", b"\xab\xcd"),
    ("esp32", "ESP32", "V1000", "ESP32", None, "0211223344AA", b"\x10\x20"),
    ("unix", "UNIX", "1.0.0", "UNIX", "860000000000009", None, b"\x00\xaa"),
]
URLS = [None, "###http://h.example/fw.bin", "http://h.example/upgrade?", "http://h.example/upgrade",
        "http://h.example/u?a=1&", "http://h.example/u?a=1"]
OPTS = [{}, {"imei": "123456"}, {"version": "9.9.9", "firmware_name": "X_LuatOS-SoC_Y"},
        {"project_key": "other", "method": "POST"}]
GLOBALS = [G, {**G, "PRODUCT_KEY": None}, {**G, "VERSION": "v1-2_3"}, {**G, "VERSION": "1.2"},
           {**G, "PROJECT": None}]


def url_cases(id_rule: str | None) -> list[dict]:
    cases = []
    for n, (board, url, opts, g) in enumerate(itertools.product(BOARDS, URLS, OPTS, GLOBALS)):
        name, model, core, bsp, imei, mac, uid = board
        o = dict(opts)
        if url is not None:
            o["url"] = url
        if id_rule:
            o["id_rule"] = id_rule
        cases.append({
            "name": f"{n}:{name}:{url}:{sorted(opts)}:{g}",
            "globals": g,
            "board": {"model": model, "core": core, "bsp": bsp, "imei": imei, "mac": mac,
                      "uid": uid},
            "opts": o,
            "calls": 2,
            "http": {"code": -9},
        })
    return cases


def to_device(case: dict) -> dict:
    b = case["board"]
    return {
        "globals": case["globals"],
        "board": {"model": b["model"], "core_version": b["core"], "bsp": b["bsp"],
                  "imei": b["imei"], "mac": b["mac"],
                  "unique_id": b["uid"].hex() if b["uid"] else None},
        "opts": case["opts"],
        "calls": case["calls"],
    }


def classify(case: dict, lua: list, mp: list) -> set[str]:
    """The DIFFERENCES keys that explain how the two calls differ: {} when they agree,
    {"unexplained"} when no listed difference accounts for it."""
    if lua[0] == "ret" and mp[0] == "ret":
        return set()
    if lua[0] == "error":
        return {"lua_error" if mp[0] == "ret" else "unexplained"}
    if lua[0] != "url" or mp[0] != "url":
        nil = lua[0] == "url" and _id_param(lua[2]) == "nil"
        return {"nil_id" if nil else "unexplained"}
    if lua[1] != mp[1]:
        return {"unexplained"}
    # Undo each listed difference on LuatOS's URL, one after the other, until they agree.
    keys = set()
    url, want = lua[2], mp[2]
    core = case["board"]["core"]
    if core[:1] not in "Vv" and "version=" + core[1:] in url:
        url, keys = url.replace("version=" + core[1:], "version=" + core), keys | {"core_label"}
    base = case["opts"].get("url", "")
    if base[:3] != "###" and url.startswith(base) and base and base[-1] not in "?&":
        url = base + ("&" if "?" in base else "?") + url[len(base):]
        keys.add("separator")
    lua_id, mp_id = _id_param(url), _id_param(want)
    if lua_id != mp_id:
        url = url.replace(lua_id, mp_id, 1)
        keys.add("nil_id" if lua_id == "nil" else "id_rule")
    return keys if url == want else {"unexplained"}


def _id_param(url: str) -> str:
    # The device-id part of a built URL: what stands before "&project_key=".
    head = url.split("&project_key=")[0]
    for key in ("imei=", "mac=", "uid=", "nil"):
        i = head.rfind(key)
        if i >= 0:
            return head[i:]
    return ""


def compare_urls(cases, lua_out, mp_out) -> tuple[dict[str, int], list[str]]:
    seen: dict[str, int] = {}
    bad = []
    for case, mp in zip(cases, mp_out, strict=True):
        lua = lua_calls(lua_out[case["name"]])
        assert len(lua) == len(mp) or lua and lua[0][0] in ("ret", "error"), (case["name"], lua)
        for i in range(len(mp)):
            lc = lua[min(i, len(lua) - 1)]
            kinds = classify(case, lc, mp[i]) or {"agree"}
            for kind in kinds:
                seen[kind] = seen.get(kind, 0) + 1
            if "unexplained" in kinds:
                bad.append(f"{case['name']} call {i + 1}:\n  LuatOS {lc}\n  mpfota {mp[i]}")
    return seen, bad


def test_url_building_matches_luatos_or_a_listed_difference(tmp_path):
    cases = url_cases(None)
    lua_out = run_lua(cases, tmp_path)
    mp_out = device_prepare(cases)
    seen, bad = compare_urls(cases, lua_out, mp_out)
    assert not bad, f"{len(bad)} unexplained differences:\n" + "\n".join(bad[:10])
    assert seen.pop("agree") > len(cases) // 2, "many calls must agree exactly"
    # Each listed difference occurs on this grid (so its classification is exercised).
    assert set(seen) == {"separator", "id_rule", "nil_id", "lua_error", "core_label"}, seen


def test_model_rule_is_luatos_masters_device_id(tmp_path):
    # With id_rule "model" the device id is LuatOS HEAD's for every model in its table; boards
    # outside it get result 5 where LuatOS sends "nil".
    cases = [c for c in url_cases("model") if c["globals"] is G and "imei" not in c["opts"]
             and c["opts"].get("url", "").endswith(("?", "&"))]
    lua_out = run_lua(cases, tmp_path)
    mp_out = device_prepare(cases)
    seen, bad = compare_urls(cases, lua_out, mp_out)
    assert not bad, "\n".join(bad[:10])
    seen.pop("agree")
    assert set(seen) <= {"nil_id", "core_label"}, seen
    nil_boards = {c["board"]["model"] for c, m in zip(cases, mp_out, strict=True)
                  if m[0][0] == "ret"}
    assert nil_boards == {"ESP32", "UNIX"}, nil_boards


def test_listed_differences_are_documented():
    text = DOC.read_text()
    missing = [k for k, phrase in DIFFERENCES.items() if phrase not in text]
    assert not missing, f"docs/libfota2.md does not list: {missing}"


# --------------------------------------------------------------------- transport outcomes

IOT = "iot.openluat.com"
IOT_27 = json.dumps(hs.IOT_ANSWER)
IOT_43 = json.dumps({"code": 43, "msg": "wait"})
IOT_99 = json.dumps({"code": 99, "msg": "new"})  # a code neither side knows
IOT_LIST = json.dumps({"code": []})  # any JSON value may come as the code
SIZE = 40_000 + 64  # core-2.0.0 of the luatos server: a 40000-byte body behind its header


class ConformanceServer(LuatOSServer):
    """The LuatOS test server plus /cut-head: a status line and half a header, then close."""

    def _do_cut_head(self, conn, req, args):
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Le")
        return False


@pytest.fixture(scope="module")
def server():
    from mpfota_host import image

    srv = ConformanceServer()
    srv.add_image("core-2.0.0", image.make_image(image.factory_body("2.0.0", 40_000), "2.0.0"),
                  "2.0.0")
    srv.add_blob("not-an-image", hs.random_bytes(30_000, 99))
    srv.start()
    yield srv
    srv.stop()


# name -> (path on the server, extra opts, (code, body) that LuatOS's http layer gives, why,
#          the DIFFERENCES key when mpfota deliberately differs)
OUTCOMES = {
    "200 with a package": ("/blob/core-2.0.0", {}, (200, SIZE),
                           "on_complete: luat_fota_done() 0 and luat_fota_end(1) succeed; Lua "
                           "gets 200 and the body's byte count", None),
    "206 with a package": ("/blob/core-2.0.0", {"headers": {"Range": "bytes=0-"}}, (200, SIZE),
                           "on_complete sets status_code = 200 for a 206", None),
    "POST, 200 with a package": ("/blob/core-2.0.0", {"method": "POST", "body": "id=1"},
                                 (200, SIZE), "as 200; the method is the caller's", None),
    "200 empty": ("/empty", {}, (-9, None),
                  "on_complete: luat_fota_done() on nothing written is not 0 -> HTTP_ERROR_FOTA",
                  None),
    "200, not an image": ("/blob/not-an-image", {}, (-9, None),
                          "luat_fota_write/luat_fota_done refuse it -> HTTP_ERROR_FOTA", None),
    "3xx, no update behind": ("/redirect?to=/status/404", {}, (-9, "moved"),
                              "on_headers_complete: a status other than 200/206 -> "
                              "HTTP_ERROR_FOTA; Location is never read", None),
    "3xx to a package": ("/redirect?to=/blob/core-2.0.0", {}, (-9, "moved"),
                         "as above: LuatOS does not follow", "redirect"),
    "404, platform JSON 27": ("/status/404?via=" + IOT, {}, (-9, IOT_27),
                              "on_headers_complete -> HTTP_ERROR_FOTA, body kept (the "
                              "iot_server README log: fota -9 {\"code\": 27, ...})", None),
    "500, platform JSON 43": ("/status/500?via=" + IOT + "&body=" + quote(IOT_43), {},
                              (-9, IOT_43),
                              "as 404", None),
    "500, platform JSON 99": ("/status/500?via=" + IOT + "&body=" + quote(IOT_99), {},
                              (-9, IOT_99), "as 404; an unknown code is logged as such", None),
    "500, platform JSON, a list as code": ("/status/500?via=" + IOT + "&body="
                                           + quote(IOT_LIST), {}, (-9, IOT_LIST),
                                           "as 404; a code no known one equals", None),
    "503, not JSON": ("/status/503?via=" + IOT + "&body=busy", {}, (-9, "busy"), "as 404",
                      None),
    "connection refused": (None, {}, (-4, None),
                           "luat_lib_http_callback: EV_NW_RESULT_CONNECT failed -> "
                           "HTTP_ERROR_CONNECT", None),
    "closed without an answer": ("/close-early", {}, (-5, None),
                                 "on_tcp_closed before the head completed -> HTTP_ERROR_CLOSE",
                                 None),
    "closed in the head": ("/cut-head", {}, (-5, None), "as closed without an answer", None),
    "body cut short (Content-Length)": ("/truncate/core-2.0.0?at=1000", {}, (-9, None),
                                        "on_tcp_closed -> on_complete: body_len < "
                                        "Content-Length, \"fota body incomplete\" -> "
                                        "HTTP_ERROR_FOTA", None),
    "body cut short after the head": ("/truncate/core-2.0.0?at=0", {}, (-9, None),
                                      "as above, with no body byte", None),
    "body cut short (chunked)": ("/truncate/core-2.0.0?at=1000&te=chunked", {}, (-9, None),
                                 "on_tcp_closed: chunked, unfinished -> on_complete -> "
                                 "luat_fota_done() on part of an image -> HTTP_ERROR_FOTA", None),
}


def _iot_label(lines: list[str], lua: bool) -> str | None:
    # The platform diagnosis: LuatOS logs the label on the line after its "使用合宙服务器" line;
    # mpfota logs "I/user.libfota2 IoT platform code <code> <label> <why>".
    for i, line in enumerate(lines):
        if lua and line.startswith("LOG\tinfo\t使用合宙服务器"):
            return lines[i + 1].split("\t")[2]
        if not lua and line.startswith("I/user.libfota2 IoT platform code "):
            return line.split(" ")[5]
    return None


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_transport_outcome(outcome, server, cat1_board, tmp_path):
    path, extra, (code, body), why, difference = OUTCOMES[outcome]
    tag = "c%d" % list(OUTCOMES).index(outcome)
    if path is None:
        url = "http://127.0.0.1:%d/fw.bin" % server.refused_port
    else:
        url = "%s/t/%s%s" % (server.base, tag, path)
    opts = {"url": "###" + url, **extra}
    lua_case = {"name": outcome, "globals": G, "opts": dict(opts), "calls": 1,
                "board": {"model": "Air780EHV", "core": "V2012", "bsp": "Air780EHV-1.8V",
                          "imei": "868488076543218"},
                "http": {"code": code, "body": body}}
    lua_trace = run_lua([lua_case], tmp_path)[outcome]
    out = run_device("request_once", {"opts": opts, "g": G}, cat1_board.device_env())
    rets = json.loads([x for x in out.splitlines() if x.startswith("RESULT ")][-1][7:])

    lua_req = [x.split("\t") for x in lua_trace if x.startswith("REQUEST\t")]
    assert [r[1:3] for r in lua_req] == [[extra.get("method", "GET"), url]]
    if path is not None:
        seen = server.requests_tagged(tag)
        assert seen, "mpfota never reached the server"
        assert (seen[0].method, server.base + seen[0].target) == (extra.get("method", "GET"),
                                                                   url)
    lua_rets = [int(x[4:]) for x in lua_trace if x.startswith("RET\t")]
    assert len(lua_rets) == 1 and len(rets) == 1, (lua_trace, out)
    if difference is None:
        assert rets == lua_rets, (
            f"{outcome}: LuatOS {lua_rets} (its http layer: {why}), mpfota {rets}\n{out}")
    else:
        assert DIFFERENCES[difference] in DOC.read_text()
        assert rets != lua_rets, f"{outcome}: listed as a difference but both give {rets}"
    if IOT in url:
        assert _iot_label(lua_trace, True) == _iot_label(out.splitlines(), False) is not None, (
            lua_trace, out)


def test_model_rule_on_a_board_as_the_server_sees_it(server, mcu_board, tmp_path):
    # An Air1601 board (its bsp names the model: the unix board has no model()) under the
    # model rule: the query string the server receives is the one LuatOS's libfota2 builds.
    ident = json.loads((paths.TESTS / "vectors" / "boards.json").read_text())["mcu"]
    url = "%s/t/model/status/404?" % server.base
    opts = {"url": url, "id_rule": "model"}
    lua_case = {"name": "model", "globals": G, "opts": {"url": url}, "calls": 1,
                "board": {"model": ident["bsp"], "core": ident["core_version"],
                          "bsp": ident["bsp"], "uid": bytes.fromhex(ident["uid"])},
                "http": {"code": -9, "body": IOT_27}}
    lua = lua_calls(run_lua([lua_case], tmp_path)["model"])
    out = run_device("request_once", {"opts": opts, "g": G}, mcu_board.device_env())
    assert "RESULT [4]" in out, out
    seen = server.requests_tagged("model")
    assert len(seen) == 1
    assert lua == [["url", "GET", server.base + seen[0].target]]
    assert "?mac=" + ident["uid"].upper() + "&" in seen[0].target
