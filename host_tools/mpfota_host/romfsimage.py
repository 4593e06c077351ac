"""ROMFS images (MicroPython's read-only filesystem in a flash partition) of host files: the
format part of `mpfota romfs`, also used by the virtual board and the benchmarks.

A board imports `.mpy` files from a ROMFS partition in place: their bytecode and constants stay
in flash, as frozen modules' do. mpremote's `VfsRomWriter` writes the format.
"""

from __future__ import annotations

from pathlib import Path

from mpremote.romfs import VfsRomWriter

from .errors import UserError

HEADER = VfsRomWriter.ROMFS_HEADER


def pack(files: list[tuple[Path, str]]) -> bytes:
    """A ROMFS image holding each host file at its path (`a/b.mpy`)."""
    tree: dict = {}
    for src, rel in files:
        node = tree
        *dirs, name = rel.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = src
    writer = VfsRomWriter()

    def add(node: dict) -> None:
        for name in sorted(node):
            entry = node[name]
            if isinstance(entry, dict):
                writer.opendir(name)
                add(entry)
                writer.closedir()
            else:
                writer.mkfile(name, entry.read_bytes())

    add(tree)
    return writer.finalise()


def of_folder(folder: Path) -> bytes:
    """The image of every file under `folder`, at the same paths."""
    return pack([(p, p.relative_to(folder).as_posix()) for p in sorted(folder.rglob("*"))
                 if p.is_file()])


def of_staged(staged: list[tuple[Path, str]]) -> bytes:
    """The image of files `deploy.stage` made for /lib, at the image's root."""
    return pack([(src, rel.removeprefix("lib/")) for src, rel in staged])


def check(data: bytes, what: str) -> None:
    """UserError unless `data` starts like a ROMFS image."""
    if not data.startswith(HEADER):
        raise UserError(f"{what} is not a ROMFS image (it does not start with {HEADER.hex()})")
