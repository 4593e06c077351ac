# Log lines in the LuatOS format ("I/user.tag arg1 arg2"), so logs read like the Lua demos'.
# lsys.log re-exports these functions.
_LEVELS = {"D": 0, "I": 1, "W": 2, "E": 3}
level = 1  # lowest level printed: 0 debug, 1 info, 2 warn, 3 error


def _emit(mark, tag, args):
    if _LEVELS[mark] < level:
        return
    print("%s/user.%s" % (mark, tag), *args)


def debug(tag, *args):
    _emit("D", tag, args)


def info(tag, *args):
    _emit("I", tag, args)


def warn(tag, *args):
    _emit("W", tag, args)


def error(tag, *args):
    _emit("E", tag, args)
