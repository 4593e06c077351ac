# Version rules of seed 001 (§6.3.2.2, §7.1) and the firmware-name layout suffix (§6.3.2),
# on the unix port (the same module runs under CPython: tests/host/test_package_rules.py).
from mpfota import version as v


def test_version_format_xxx_yyy_zzz_each_at_most_999():
    for good in ("001.000.001", "1.0.0", "999.999.999", "030.000.311", "0.0.0"):
        assert v.parse(good) is not None, good
        assert v.check(good) is None
    assert v.parse("001.002.003") == (1, 2, 3)
    for bad in ("1000.0.0", "1.0", "1.0.0.0", "1..0", "a.b.c", "1.0.-1", " 1.0.0", "1.0.0 ",
                "", "0001.0.0", "1.0.0a", "+1.0.0", None, 100):
        assert v.parse(bad) is None, bad
        assert "xxx.yyy.zzz" in v.check(bad)


def test_upgrade_rule_same_a_needs_greater_c():
    assert v.is_upgrade("001.000.001", "001.000.002")
    assert not v.is_upgrade("001.000.001", "001.000.001")
    assert not v.is_upgrade("001.000.002", "001.000.001")


def test_upgrade_rule_greater_a_needs_c_not_smaller():
    assert v.is_upgrade("001.000.001", "002.000.001")
    assert v.is_upgrade("001.000.001", "002.000.200")
    assert not v.is_upgrade("001.000.005", "002.000.004")
    assert not v.is_upgrade("002.000.001", "001.000.009"), "A going down is never an upgrade"


def test_upgrade_rule_ignores_b():
    assert not v.is_upgrade("001.000.001", "001.999.001")
    assert v.is_upgrade("001.999.001", "001.000.002")
    # The seed's examples after 001.000.001 (§6.3.2.2).
    for new in ("002.000.200", "001.000.002", "030.000.311"):
        assert v.is_upgrade("001.000.001", new), new


def test_malformed_versions_are_never_upgrades():
    assert not v.is_upgrade("001.000.001", "1.0")
    assert not v.is_upgrade("junk", "001.000.002")


def test_core_versions_compare_by_number():
    assert v.compare_core("V2012", "V2010") == 1
    assert v.compare_core("V2010", "V2012") == -1
    assert v.compare_core("2.0.0", "1.9.9") == 1
    assert v.compare_core("1.10", "1.9") == 1
    assert v.compare_core("1.0", "1.0.0") == 0
    assert v.compare_core("V0017", "v17") == 0
    assert v.compare_core("Luat_V0026_RDA8910", "1.0.0") is None
    assert v.compare_core("custom", "custom") == 0


def test_layout_suffix():
    assert v.split_layout("FOTA2_DEMO_LuatOS-SoC_Air780EHV_1") == (
        "FOTA2_DEMO_LuatOS-SoC_Air780EHV", "1")
    assert v.split_layout("DEMO_LuatOS-SoC_Air780EHV") == ("DEMO_LuatOS-SoC_Air780EHV", None)
    assert v.split_layout("DEMO_LuatOS-SoC_V2012") == ("DEMO_LuatOS-SoC_V2012", None)
    # Seed 001 §6.3.2: a _1 firmware only takes _1 packages.
    assert v.layout_compatible("X_LuatOS-SoC_Air780EHV_1", "X_LuatOS-SoC_Air780EHV_1")
    assert not v.layout_compatible("X_LuatOS-SoC_Air780EHV_1", "X_LuatOS-SoC_Air780EHV_2")
    assert not v.layout_compatible("X_LuatOS-SoC_Air780EHV_1", "X_LuatOS-SoC_Air780EHV")


def test_firmware_name_and_reported_version():
    assert v.firmware_name("DEMO", "UNIX", 1) == "DEMO_LuatOS-SoC_UNIX_1"
    assert v.firmware_name("DEMO", "Air780EHV") == "DEMO_LuatOS-SoC_Air780EHV"
    # libfota2 reports core number + A + C (spec §1.4).
    assert v.report_version("V2012", "001.000.001") == "2012.001.001"
    assert v.report_version("V2012", "bad") is None
