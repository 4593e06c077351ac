# Boot-time apply: call once per boot, after the filesystem is mounted and before main.py.
#
#   import mpfota.bootapply
#   mpfota.bootapply.run()
#
# (boards/unix/bootrom.py does it; on an ESP32 put the two lines in /boot.py.)
# Swaps in a staged script set, finishes a swap or a rollback a power cut interrupted, and rolls
# back a new script set that was not confirmed before the board reset (mpfota.scripts). It never
# stops the boot: a failure is logged and main.py runs.


def run():
    # Returns the script-set status afterwards ("valid", "pending", "rolled_back", ...), or
    # "error" when the apply failed (logged).
    from mpfota import journal, log

    try:
        rec = journal.load()
        if "scripts" not in rec and "scar" not in rec and journal.damaged() is None:
            return "valid"  # no script set was ever installed: mpfota.scripts is not loaded
        from mpfota import scripts

        return scripts.apply_at_boot()
    except Exception as e:  # a power cut (BaseException) is not caught
        log.error("fota", "boot-time apply failed: %r" % (e,))
        return "error"
