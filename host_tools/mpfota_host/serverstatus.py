"""The status page of `mpfota serve --status-page`: releases, devices, last answers, bans.

Read-only HTML, one page, no scripts: what an operator would otherwise read from
`mpfota server releases` / `devices`. Changes stay with the admin commands (the page shows
the `mpfota server unban` line for each ban).
"""

from __future__ import annotations

import time
from html import escape

from .serverdb import Store
from .serverrules import MESSAGES

_STYLE = """
body { font: 14px/1.4 sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { border: 1px solid #bbb; padding: 3px 8px; }
th { background: #eee; text-align: left; } td.num { text-align: right; }
tr.banned td { background: #fde2e2; } code { background: #f4f4f4; padding: 0 3px; }
"""


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC"


def _table(table_id: str, head: tuple[str, ...], rows: list[tuple[list[str], str]],
           empty: str) -> str:
    if not rows:
        return f'<p id="{table_id}-empty">{escape(empty)}</p>'
    out = [f'<table id="{table_id}"><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
           + "</tr>"]
    for cells, cls in rows:
        out.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</table>"


# The platform's messages are Chinese (MESSAGES, what devices get); the page says them in
# English and keeps the original as the cell's tooltip.
_ENGLISH = {3: "invalid device", 17: "no permission", 21: "banned", 25: "invalid project",
            26: "invalid firmware", 27: "up to date", 40: "cyclic upgrade", 43: "please wait"}


def _code(code: int | None) -> str:
    if code is None:
        return "download"
    return (f'<span title="{escape(MESSAGES.get(code, ""))}">{code} '
            f'{escape(_ENGLISH.get(code, "?"))}</span>')


def status_page(store: Store, now: float) -> str:
    releases = [([escape(p.project), escape(p.firmware), escape(p.version),
                  escape(p.core or "-"), escape(p.from_core),
                  escape(p.file) if p.file else "not ready (43)",
                  str(p.size) if p.size is not None else "-"], "")
                for p in store.packages()]
    devices = [([escape(d.id), escape(d.project or "-"), escape(d.firmware or "-"),
                 escape(d.version or "-"), _when(d.last_seen), _code(d.last_code),
                 str(d.requests), str(d.offers_today), escape(d.ban or "")],
                "banned" if d.ban else "")
               for d in store.devices(now)]
    bans = [([escape(dev), escape(reason), _when(since),
              f"<code>mpfota server unban {escape(dev)}</code>"], "banned")
            for dev, reason, since in store.bans()]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mpfota serve: status</title>
<style>{_STYLE}</style></head>
<body>
<h1>mpfota serve</h1>
<p id="summary">{len(releases)} packages, {len(devices)} devices, {len(bans)} bans
at {_when(now)} (state: {escape(store.db_name)})</p>
<h2>Releases</h2>
{_table("releases", ("project", "firmware", "version", "core", "from core", "file", "bytes"),
        releases, "no releases")}
<h2>Devices</h2>
{_table("devices", ("device", "project", "firmware", "reported version", "last check",
                    "last answer", "checks", "downloads today", "ban"),
        devices, "no devices seen")}
<h2>Bans</h2>
{_table("bans", ("device", "reason", "since", "lift it with"), bans, "no bans")}
</body></html>
"""
