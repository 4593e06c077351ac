# One update of the core image: write into the spare slot, verify, then switch.
import board
from mpfota import confirm, log
from mpfota.writer import FOTA_ERROR, FotaError, SlotWriter


class Update:
    def __init__(self, buf=None):
        if confirm.status() == "pending":
            raise FotaError(FOTA_ERROR, "the running image is not confirmed yet; an update now "
                            "would overwrite the only known-good slot")
        self.running, self.spare = board.ota_slots()
        self.writer = SlotWriter(self.spare, buf)
        self.verified = False

    def verify(self, length=None, md5=None, sha256=None):
        # Length, digests, read-back and the board's image check; raises FotaError.
        w = self.writer
        w.finish()
        got_md5, got_sha = w.verify(length, md5, sha256)
        if not board.check_image(self.spare, w.flushed, w.buf):
            raise FotaError(FOTA_ERROR, "the update is not a bootable image for this board")
        log.info("fota", "verified", w.flushed, "bytes md5", got_md5, "sha256", got_sha)
        self.verified = True
        return got_md5, got_sha

    def switch(self, version=None):
        # Make the verified slot the boot slot (applied at the next reset).
        if not self.verified:
            raise FotaError(FOTA_ERROR, "refusing to switch to an unverified slot")
        confirm.arm(self.spare, version)
        log.info("fota", "boot slot is now", self.spare.info()[4], "- reset to apply")
