# Device side of `mpfota bench`: one timed download into the spare slot on the virtual board.
#   micropython dlbench.py engine|reference|baseline|buffers|libfota2 URL
# (baseline boots and imports what the engine imports, then stops: the heap it needs is the
# part of download.min_heap_kb that is code and board, not download work; buffers does the
# same and then allocates the download's two buffers, 4 KiB + 1 KiB, nothing else; libfota2 is a
# core update as an app without lsys makes it, libfota2.request with a ###URL, and then
# prints "module: NAME" for every loaded module: the host counts the device modules among
# them for download.code_kb)
# Prints "elapsed_ms: N" and "bytes: N". Both modes do the same work: HTTP GET over loopback,
# SHA-256 of every byte (no MD5: none is given to check), sector erase + program into the
# spare slot, SHA-256 read-back, and the board's image check. What the engine adds (resume
# checkpoints with the CRC-32 of the flash prefix, asyncio, the journal) is its structure.
import sys
import time

import bootrom


def engine(url):
    import asyncio

    from mpfota import download

    r = asyncio.run(download.fetch(url, switch=False, retries=0))
    return r.size


def libfota2_update(url):
    import asyncio

    import libfota2

    async def main():
        got = []
        libfota2.request(got.append, {"url": "###" + url})
        while not got:
            await asyncio.sleep_ms(5)
        return got[0]

    ret = asyncio.run(main())
    if ret != 0:
        raise OSError("libfota2 result %d" % ret)
    for name in sys.modules:
        print("module:", name)
    from mpfota import slot

    print("slot_reads:", slot.reads)  # full reads of the spare slot after the write
    return 0


def reference(url):
    # The same work written straight: blocking socket, no engine structure.
    import hashlib
    import socket

    import board

    hostport, path = url[7:].split("/", 1)
    host, port = hostport.split(":")
    s = socket.socket()
    s.connect(socket.getaddrinfo(host, int(port))[0][-1])
    s.send(b"GET /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, hostport))
    f = s.makefile("rb")
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line[15:])
    _, spare = board.ota_slots()
    buf = bytearray(4096)
    mv = memoryview(buf)
    sha = hashlib.sha256()
    done = 0
    block = 0
    while done < length:
        fill = 0
        while fill < 4096 and done + fill < length:
            n = f.readinto(mv[fill:])
            if not n:
                raise OSError("short body")
            fill += n
        sha.update(mv[:fill])
        spare.writeblocks(block, mv[:fill])
        block += 1
        done += fill
    s.close()
    check = hashlib.sha256()
    pos = 0
    while pos < done:
        k = min(4096, done - pos)
        spare.readblocks(pos // 4096, mv[:k])
        check.update(mv[:k])
        pos += k
    assert check.digest() == sha.digest()
    assert board.check_image(spare, done, buf)
    return done


bootrom.boot()
mode, url = sys.argv[1], sys.argv[2]
t0 = time.ticks_ms()
if mode in ("baseline", "buffers"):
    # What the engine imports, and nothing run: the baseline of the heap figures.
    import asyncio  # noqa: F401

    from mpfota import download  # noqa: F401

    size = 0
    if mode == "buffers":
        # What the heap left by the imports needs to hold the download's buffers alone.
        sector, head = bytearray(4096), bytearray(1024)
elif mode == "libfota2":
    size = libfota2_update(url)
else:
    size = engine(url) if mode == "engine" else reference(url)
print("elapsed_ms:", time.ticks_diff(time.ticks_ms(), t0))
print("bytes:", size)
