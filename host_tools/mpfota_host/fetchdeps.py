"""Fetch device-side dependencies that pip cannot install, pinned by version and sha256.

`micropython-umqtt.simple` is published only as an old sdist without setup.py, so pip cannot
install it. We look it up through pip's own index machinery (so the index configured for pip is
the one used), check the pinned hash, and unpack the module into an ignored folder that is on the
device's module path.

    python -m mpfota_host.fetchdeps deps
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pinned:
    project: str
    version: str
    sha256: str
    members: tuple[str, ...]  # paths inside the sdist's top folder, copied as they are


PINNED = (
    Pinned(
        "micropython-umqtt.simple",
        "1.3.4",
        "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f",
        ("umqtt/simple.py",),
    ),
)


def _download(project: str, version: str) -> bytes:
    from pip._internal.index.collector import LinkCollector
    from pip._internal.index.package_finder import PackageFinder
    from pip._internal.models.index import PyPI
    from pip._internal.models.search_scope import SearchScope
    from pip._internal.models.selection_prefs import SelectionPreferences
    from pip._internal.network.session import PipSession

    session = PipSession()
    scope = SearchScope.create(find_links=[], index_urls=[PyPI.simple_url], no_index=False)
    finder = PackageFinder.create(
        link_collector=LinkCollector(session=session, search_scope=scope),
        selection_prefs=SelectionPreferences(allow_yanked=False),
    )
    for cand in finder.find_all_candidates(project):
        if str(cand.version) == version and cand.link.filename.endswith(".tar.gz"):
            resp = session.get(cand.link.url.split("#")[0], timeout=60)
            resp.raise_for_status()
            return resp.content
    raise SystemExit(f"fetchdeps: {project}=={version} is not in the package index")


def fetch(pin: Pinned, dest: Path) -> None:
    data = _download(pin.project, pin.version)
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin.sha256:
        raise SystemExit(
            f"fetchdeps: {pin.project}=={pin.version}: sha256 {digest} != pinned {pin.sha256}"
        )
    top = f"{pin.project}-{pin.version}/"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in pin.members:
            blob = tar.extractfile(top + member)
            if blob is None:
                raise SystemExit(f"fetchdeps: {member} missing from {pin.project}")
            out = dest / member
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(blob.read())
    print(f"fetchdeps: {pin.project}=={pin.version} -> {dest}")


def present(root: Path) -> bool:
    return all((root / m).is_file() for pin in PINNED for m in pin.members)


def ensure(say=print) -> Path:
    """A folder holding every pinned dependency: the checkout's (or the wheel's) deps/, else a
    cache folder they are fetched into once, by pinned hash (`mpfota deploy` from a pip install
    of a wheel built without deps/)."""
    from . import paths
    from .errors import UserError

    cache = paths.BUILD / "deps"
    for root in (paths.DEPS, cache):
        if present(root):
            return root
    for pin in PINNED:
        say(f"fetching {pin.project}=={pin.version} (pinned sha256) from the package index "
            f"into {cache}")
        try:
            fetch(pin, cache)
        except SystemExit as exc:
            raise UserError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - network and archive errors: one line
            raise UserError(f"cannot fetch {pin.project}=={pin.version}: {exc}") from None
    return cache


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dest = Path(args[0] if args else "deps")
    for pin in PINNED:
        fetch(pin, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
