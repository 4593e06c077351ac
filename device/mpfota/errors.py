# The error an update that is wrong raises (pure: also imported under CPython, for fuzzing).
# Its code follows the LuatOS http numbering: -9 is HTTP_ERROR_FOTA ("the package is invalid").
FOTA_ERROR = -9


class FotaError(Exception):
    def __init__(self, code, msg):
        super().__init__(code, msg)
        self.code = code
        self.msg = msg

    def __str__(self):
        return "%d %s" % (self.code, self.msg)
