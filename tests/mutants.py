"""The mutation table of `make mutate` (tests/mutate.py): deliberate breakages of the safety
checks, each with the tests that must fail when it is applied.

A mutant replaces one exact snippet of one file. When the code changes so that a snippet is no
longer there exactly once, tests/host/test_mutants.py fails and `make mutate` stops with an
error naming the mutant: change the snippet along with the code, so that the check it breaks is
still the one named. docs/reliability.md ("make mutate") lists the same table for readers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str  # short, unique, used on the command line
    breaks: str  # the safety check it switches off, in a few words
    path: str  # repository-relative file
    find: str  # exact snippet; must occur exactly once in the file
    replace: str
    tests: tuple[str, ...]  # repository-relative node ids; every one must fail


SLOT = "device/mpfota/slot.py"
PACKAGE = "device/mpfota/package.py"
DEVICE = "tests/device/"
CONFORMANCE = "tests/host/test_luatos_conformance.py::"  # LuatOS's own libfota2.lua beside ours

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "md5-check", "the slot's MD5 comparison", SLOT,
        "        if md5 and got_md5 != md5.lower():\n",
        "        if False:\n",
        (DEVICE + "test_download.py::test_wrong_md5_and_sha256",),
    ),
    Mutant(
        "sha256-check", "the slot's SHA-256 comparison", SLOT,
        "        if sha256 and _hex(got) != sha256.lower():\n",
        "        if False:\n",
        (DEVICE + "test_download.py::test_wrong_md5_and_sha256",),
    ),
    Mutant(
        "read-back", "the read-back comparison of the written slot", SLOT,
        "        if back.digest() != got:\n",
        "        if False:\n",
        (DEVICE + "test_readback.py::test_read_back_catches_damage_the_image_check_cannot_see",
         DEVICE + "test_readback_esp32.py::test_read_back_catches_damage_after_the_image",
         DEVICE + "test_slot.py::test_read_back_refuses_a_sector_that_changed_after_the_write"),
    ),
    Mutant(
        "image-check", "the board's image check of the written slot", SLOT,
        "        if check is not None and not check.ok(n):\n",
        "        if False:\n",
        (DEVICE + "test_fota.py::test_polling_is_done_ends_on_a_bad_image",
         DEVICE + "test_fota.py::test_truncated_stream_switches_nothing"),
    ),
    Mutant(
        "switch-unverified", "the refusal to switch to a slot that failed verification", SLOT,
        "        if not self.verified:\n",
        "        if False:\n",
        (DEVICE + "test_readback.py::test_read_back_catches_damage_the_image_check_cannot_see",
         DEVICE + "test_slot.py::test_read_back_refuses_a_sector_that_changed_after_the_write"),
    ),
    Mutant(
        "unconfirmed-guard", "the refusal to write the spare slot while an update is pending",
        SLOT,
        "        what = unconfirmed(_label(self.running))\n        if what:\n",
        "        what = unconfirmed(_label(self.running))\n        if False:\n",
        (DEVICE + "test_slot.py::test_unconfirmed_image_refuses_a_new_slot",
         DEVICE + "test_download_guard.py::"
         "test_download_refused_while_the_running_image_is_pending"),
    ),
    Mutant(
        "unconfirmed-guard-package", "a package's refusal while an update is pending", PACKAGE,
        "        what = unconfirmed()\n        if what:\n",
        "        what = unconfirmed()\n        if False:\n",
        (DEVICE + "test_package.py::test_no_new_package_while_an_update_awaits_confirmation",),
    ),
    Mutant(
        "confirm", "confirm() marking the running image valid", "device/mpfota/confirm.py",
        "    board.Partition.mark_app_valid_cancel_rollback()\n",
        "",
        (DEVICE + "test_confirm.py::test_healthy_image_is_confirmed",),
    ),
    Mutant(
        "confirm-journal", "confirm() clearing the journal's pending core record",
        "device/mpfota/confirm.py",
        '"confirmed")\n        journal.put("core", None)',
        '"confirmed")\n        None',
        (DEVICE + "test_confirm.py::test_healthy_image_is_confirmed",
         DEVICE + "test_journal.py::"
         "test_damaged_journal_while_an_image_is_pending_blocks_updates_until_confirmed",
         DEVICE + "test_download_guard.py::"
         "test_download_refused_while_the_running_image_is_pending"),
    ),
    Mutant(
        "signature", "the package manifest's RSA signature check", PACKAGE,
        "            if not rsa.verify(key, hashlib.sha256(raw).digest(), sig, prehashed=True):\n",
        "            if False:\n",
        (DEVICE + "test_package_bad.py::test_signature_by_another_key",
         DEVICE + "test_package_bad.py::test_tampered_manifest_under_a_valid_signature",
         DEVICE + "test_package_bad.py::test_bad_signature_with_an_explicit_key"),
    ),
    Mutant(
        "rsa-padding", "the whole PKCS#1 v1.5 encoding check (only the digest at its end compared)",
        "device/mpfota/rsa.py",
        '    return m.to_bytes(key.size, "big") == encoded_message(digest, key.size)\n',
        '    return m.to_bytes(key.size, "big")[-32:] == digest\n',
        (DEVICE + "test_rsa.py::test_right_digest_under_wrong_padding_is_false",),
    ),
    Mutant(
        "anti-rollback", "the package counter against the device's minimum", PACKAGE,
        '    if m.counter < device["min_counter"]:\n',
        "    if False:\n",
        (DEVICE + "test_package_bad.py::test_anti_rollback_counter",
         DEVICE + "test_package.py::test_counter_raised_by_an_install_blocks_older_packages"),
    ),
    Mutant(
        "journal-order-switch", "the core record written before set_boot()", SLOT,
        '        journal.put("core", rec)\n        try:\n',
        "        try:\n",
        ("tests/host/test_sweep_core.py::test_power_cut_at_every_flash_operation",),
    ),
    Mutant(
        "journal-order-swap", "the script journal written before the swap it describes",
        "device/mpfota/scripts.py",
        '    rec["state"] = "swapping"\n    _save(rec)\n    _run_swap(rec)\n',
        '    rec["state"] = "swapping"\n    _run_swap(rec)\n',
        (DEVICE + "test_scripts.py::test_crash_at_every_step_of_the_swap",),
    ),
    Mutant(
        "journal-checksum", "the journal record's CRC-32", "device/mpfota/journal.py",
        "    if binascii.crc32(raw[4:8] + raw[_HEAD:]) != _u32(raw, 8):\n",
        "    if False:\n",
        (DEVICE + "test_journal.py::test_record_has_crc_and_sequence",),
    ),
    Mutant(
        "url-building", "libfota2's separator before the device-id query",
        "device/libfota2url.py",
        '    return url + ("&" if "?" in url else "?") + query\n',
        '    return url + "?" + query\n',
        (DEVICE + "test_libfota2.py::test_vectors_pure_rules",
         DEVICE + "test_libfota2.py::test_query_string_as_the_server_sees_it_imei",
         "tests/host/test_vectors.py::test_vectors_pass_under_cpython",
         CONFORMANCE + "test_url_building_matches_luatos_or_a_listed_difference"),
    ),
    Mutant(
        "result-codes", "libfota2's result 4 (not 3) for a body cut short", "device/libfota2.py",
        "        if error == -5 and not in_body:\n",
        "        if error == -5:\n",
        (DEVICE + "test_libfota2.py::test_result_4_body_cut_short",
         CONFORMANCE + "test_transport_outcome[body cut short after the head]",
         CONFORMANCE + "test_transport_outcome[body cut short (Content-Length)]",
         CONFORMANCE + "test_transport_outcome[body cut short (chunked)]"),
    ),
    Mutant(
        "content-length", "the HTTP client stopping at Content-Length", "device/mpfota/http.py",
        "        if self._mode != _TO_CLOSE and self._left < n:\n",
        "        if self._mode == _CHUNKED and self._left < n:\n",
        (DEVICE + "test_http.py::test_longer_body_than_announced_is_cut_at_content_length",
         "tests/host/test_fuzz_http_client.py::test_known_framings"),
    ),
    Mutant(
        "if-range", "If-Range on a resumed raw download", "device/mpfota/download.py",
        "if_range=validator if offset else None",
        "if_range=None",
        (DEVICE + "test_resume_changed.py::test_raw_image_changed_between_drop_and_resume",),
    ),
    Mutant(
        "if-range-retry", "If-Range on a retry before any resume record",
        "device/mpfota/download.py",
        "                validator = seen\n",
        "                validator = None\n",
        (DEVICE + "test_resume_changed.py::test_raw_image_changed_before_the_first_checkpoint",),
    ),
    Mutant(
        "if-range-package", "If-Range on a resume inside a package", "device/mpfota/download.py",
        "                validator = pkg.validator\n",
        "                validator = None\n",
        (DEVICE + "test_resume_changed.py::test_package_changed_between_drop_and_resume",),
    ),
    Mutant(
        "resume-crc", "the CRC of the flash prefix a download resumes after", SLOT,
        "        if self.crc != crc:\n",
        "        if False:\n",
        (DEVICE + "test_download.py::test_damaged_prefix_starts_over",),
    ),
    Mutant(
        "same-image", "the refusal to reinstall the running image", SLOT,
        "        if new is not None and new == board.image_id_running():\n",
        "        if False:\n",
        (DEVICE + "test_slot.py::test_download_of_the_running_image_stops_after_the_header",
         DEVICE + "test_slot.py::test_fota_module_refuses_the_running_image",
         DEVICE + "test_slot.py::test_libfota2_gives_result_4_for_the_running_image"),
    ),
    Mutant(
        "user-files", "a script set never replacing a file no package installed",
        "device/mpfota/scripts.py",
        '    return "/%s is a file on the board that no package installed" % path\n',
        "    return None\n",
        (DEVICE + "test_package_bad.py::test_script_over_a_user_file",),
    ),
    Mutant(
        "journal-damage", "boot moving nothing when the journal does not verify",
        "device/mpfota/scripts.py",
        "    why = journal.damaged() or journal.scar()\n    if why:\n",
        "    why = journal.damaged() or journal.scar()\n    if False:\n",
        (DEVICE + "test_journal.py::"
         "test_damaged_journal_in_each_state_deletes_nothing_and_an_update_recovers",),
    ),
    Mutant(
        "delta-base", "a delta patch's base SHA-256 against the running slot",
        "device/mpfota/delta.py",
        "    if _hash_base(run, h.from_size, slot.mv) != h.from_sha256:\n",
        "    if False:\n",
        (DEVICE + "test_delta.py::test_refuses_wrong_base",),
    ),
    Mutant(
        "delta-base-stream", "a streamed delta unit's output CRC (a wrong base shows there)",
        "device/mpfota/deltastream.py",
        "        if st[_OCRC] != want:\n",
        "        if False:\n",
        # The host builds its test patches with this same Applier and checks each is refused:
        # with the mutant that check fails first, so these tests error in their fixture.
        (DEVICE + "test_deltastream.py::test_refuses_wrong_base_mid_stream",
         "tests/host/test_deltastream.py::test_bad_patches_are_refused[wrong_base]"),
    ),
    Mutant(
        "esp32-image-check", "the ESP32 header check refusing an app built for another chip",
        "boards/esp32/board.py",
        "    return cur[0] != _MAGIC or h[12:14] == cur[12:14]\n",
        "    return True\n",
        (DEVICE + "test_esp32_board.py::test_check_image_refuses_damaged_images",),
    ),
    Mutant(
        "esp32-switch-verifies", "ESP32: no read-back only when set_boot() checks every byte",
        "boards/esp32/board.py",
        "        return ((pos + 16) & ~15) + _HASH == length\n",
        "        return True\n",
        (DEVICE + "test_esp32_update.py::"
         "test_read_back_is_the_guard_of_what_the_header_check_does_not_read",
         DEVICE + "test_readback_esp32.py::test_read_back_catches_damage_after_the_image"),
    ),
    Mutant(
        "content-range", "the HTTP client refusing a 206 that starts elsewhere than asked",
        "device/mpfota/http.py",
        "            if range_start is not None and cr[0] != range_start:\n",
        "            if False:\n",
        (DEVICE + "test_http.py::test_206_from_the_wrong_offset_is_refused",),
    ),
    Mutant(
        "keep-files", "the swap leaving the user's copy of a keep-list file in place",
        "device/mpfota/scripts.py",
        "            if f in keep and _exists(ROOT + f):\n"
        "                continue  # the user's copy wins\n",
        "",
        (DEVICE + "test_scripts.py::test_keep_files_never_touched_by_swap_or_rollback",
         DEVICE + "test_package.py::test_keep_file_default_installed_only_when_absent"),
    ),
    Mutant(
        "delta-stream-sizes", "a streamed patch's sizes checked against the slots before writing",
        "device/mpfota/deltafetch.py",
        "        if h.to_size > self.slot.capacity:\n",
        "        if False:\n",
        (DEVICE + "test_deltastream.py::"
         "test_refuses_a_result_larger_than_the_slot_before_writing",),
    ),
    Mutant(
        "aliyun-digestsign", "the RSA check of an Aliyun job's digestsign", "device/aliyun_ota.py",
        "    if not ok:\n        raise BadJob(STEP_VERIFY_FAILED, ",
        "    if False:\n        raise BadJob(STEP_VERIFY_FAILED, ",
        ("tests/host/test_aliyun_secure.py::test_unsigned_and_forged_jobs_are_refused",),
    ),
)
