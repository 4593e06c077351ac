# Small JSON records kept on the device filesystem, written atomically (write, then rename:
# littlefs renames atomically), so a power cut leaves the old record or the new one.
import json
import os

ROOT = "/.mpfota"


def _path(name):
    return ROOT + "/" + name + ".json"


def load(name):
    try:
        with open(_path(name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save(name, record):
    try:
        os.mkdir(ROOT)
    except OSError:
        pass
    tmp = _path(name) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.rename(tmp, _path(name))


def clear(name):
    try:
        os.remove(_path(name))
    except OSError:
        pass
