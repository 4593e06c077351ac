# Transitional: the door's old name (mpfota.slot.Slot is the door), kept only while device/fota.py
# moves to the Slot API; remove with its last caller.
from mpfota.slot import Slot


class Update(Slot):
    @property
    def writer(self):
        return self
