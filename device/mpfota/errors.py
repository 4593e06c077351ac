# The engine's result codes, each defined once, and the error an update that is wrong raises
# (pure: also imported under CPython, for fuzzing).
# FOTA_ERROR follows the LuatOS http numbering: -9 is HTTP_ERROR_FOTA ("the package is
# invalid"). ALREADY_RUNNING is mpfota's own: the update is the image the board runs, nothing
# was written (libfota2 reports it as result 4, like "no new version").
FOTA_ERROR = -9
ALREADY_RUNNING = -10

# Why an update was refused (FotaError.reason), for the callers that report it: a value, never
# read out of the message. mpfota.package has the rest of its reasons beside its parser.
LENGTH = "length"
DIGEST = "digest"  # MD5 / SHA-256 / read-back of the slot
IMAGE = "image"  # not a bootable image for this board
BASE = "base"  # a delta made for another base image
SAME = "same"  # the image the board runs (code ALREADY_RUNNING)


class FotaError(Exception):
    def __init__(self, code, msg, reason=None):
        super().__init__(code, msg)
        self.code = code
        self.msg = msg
        self.reason = reason

    def __str__(self):
        return "%d %s" % (self.code, self.msg)
