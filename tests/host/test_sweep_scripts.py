"""Power cut after every flash operation of a script-set update (staging the package, the
boot-time swap, the confirmation): every boot's main.py sees the whole old set or the whole new
set, never a mix; the user's files are kept; and the update completes once powered on again."""

from __future__ import annotations

import base64

import pytest
from fixtures_package import PROJECT, make
from mpfota_host import package as pk
from mpfota_host import vboard
from sweep import Sweep

V1, V2 = "001.000.001", "001.000.002"
USER_CONFIG = '{"wifi": "home", "secret": "s3cr3t"}'
USER_DATA = "measurements 1 2 3"

MAIN_V1 = f'''PROJECT = "{PROJECT}"
VERSION = "{V1}"
from app import a, b
import old_only
import board
from mpfota import package, scripts
mods = [a.V, b.V, old_only.V]
if any(m != VERSION for m in mods):
    print("MIX", VERSION, mods)
    raise SystemExit(1)
print("SET", VERSION, scripts.check_boot())
package.install_file("/pkg/v2.pkg", project=PROJECT, version=VERSION)
board.reset()
'''

MAIN_V2 = f'''PROJECT = "{PROJECT}"
VERSION = "{V2}"
from app import a, b, c
from mpfota import scripts
mods = [a.V, b.V, c.V]
try:
    import old_only
    mods.append("old_only.py of the old set")
except ImportError:
    pass
if any(m != VERSION for m in mods):
    print("MIX", VERSION, mods)
    raise SystemExit(1)
print("SET", VERSION, scripts.check_boot())
scripts.confirm()
print("update complete")


def read(p):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return None


for name in ("/config.json", "/data/log.txt", "/app/a.py", "/app/c.py", "/old_only.py"):
    print("FILE", name, read(name))
print("FILE status", scripts.status(), scripts.installed()["version"])
'''


def app_set(version: str, main: str, extra: dict[str, bytes]) -> pk.Section:
    files = {"main.py": main.encode(), "app/a.py": f'V = "{version}"\n'.encode(),
             "app/b.py": f'V = "{version}"\n'.encode() + b"# filler\n" * 200,
             "config.json": f'{{"default": "{version}"}}'.encode(), **extra}
    return pk.scripts_section(sorted(files.items()), keep=["config.json"])


SEED = '''
import binascii, os
from mpfota import package, scripts
os.mkdir("/data")
with open("/data/log.txt", "w") as f:
    f.write({user_data!r})
with open("/config.json", "w") as f:
    f.write({user_config!r})
os.mkdir("/pkg")
for name, blob in (("v1", {v1!r}), ("v2", {v2!r})):
    with open("/pkg/%s.pkg" % name, "wb") as f:
        f.write(binascii.a2b_base64(blob))
package.install_file("/pkg/v1.pkg", project="DEMO", version="001.000.000")
scripts.apply_at_boot()
scripts.confirm()
print("seeded")
'''

@pytest.fixture
def sweep(tmp_path, make_vboard, scripts_rom):
    start = make_vboard("start")
    v1 = make([app_set(V1, MAIN_V1, {"old_only.py": f'V = "{V1}"\n'.encode()})], to_script=V1)
    v2 = make([app_set(V2, MAIN_V2, {"app/c.py": f'V = "{V2}"\n'.encode()})], to_script=V2)
    seed = tmp_path / "seed.py"
    seed.write_text(SEED.format(user_data=USER_DATA, user_config=USER_CONFIG,
                                v1=base64.b64encode(v1).decode(),
                                v2=base64.b64encode(v2).decode()))
    res = vboard.boot(start.path, app=seed, timeout=30)
    assert res.code == 0 and "seeded" in res.text, res.text
    return Sweep(start.path, None, tmp_path / "runs")


def final_state(output: str) -> dict[str, str]:
    """The FILE lines the new main.py prints after it confirms (the last boot's, if several)."""
    state: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("FILE "):
            name, _, value = line[5:].partition(" ")
            state[name] = value
    return state


@pytest.mark.slow
def test_power_cut_at_every_flash_operation_of_a_script_update(sweep):
    dry = sweep.dry_run()
    assert dry.converged and "update complete" in dry.output, dry.output
    assert f"SET {V1}" in dry.output and f"SET {V2}" in dry.output
    n = sweep.total_ops
    assert n > 20, f"the update should take many flash operations, saw {n}"
    want = {"/config.json": USER_CONFIG, "/data/log.txt": USER_DATA,
            "/app/a.py": f'V = "{V2}"', "/app/c.py": f'V = "{V2}"', "/old_only.py": "None",
            "status": f"valid {V2}"}
    assert final_state(dry.output) == want
    mixed, lost, diverged, rolled_back = [], [], [], []
    for k in range(1, n + 1):
        out, _ = sweep.cut_at(k)
        if "MIX" in out.output or vboard.EXIT_EXCEPTION in out.codes:
            mixed.append(k)
        if not out.converged or "update complete" not in out.output:
            diverged.append(k)
        if "rolled back" in out.output:
            rolled_back.append(k)
        got = final_state(out.output)
        if (got.get("/config.json"), got.get("/data/log.txt")) != (USER_CONFIG, USER_DATA):
            lost.append(k)
        if got != want:
            diverged.append(k)
    print(f"reliability.scripts.cut_points: {n}")
    print(f"reliability.scripts.mixed_sets: {len(mixed)}")
    print(f"reliability.scripts.user_files_lost: {len(lost)}")
    print(f"reliability.scripts.rolled_back_then_retried: {len(rolled_back)}")
    print(f"reliability.scripts.converged: {n - len(set(diverged))}")
    assert not mixed, f"a boot saw a mixed script set after cuts at {mixed}"
    assert not lost, f"user files lost after cuts at {lost}"
    assert not diverged, f"no convergence after cuts at {sorted(set(diverged))}"
