# Transitional: FotaError's old import path (mpfota.errors defines it), kept only while
# libfota2.py, update.py and fota.py move their imports; remove with the last of them.
from mpfota.errors import FOTA_ERROR, FotaError  # noqa: F401
