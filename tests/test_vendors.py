"""MAC vendor names (otsec/analysis/vendors.py) read from netaddr's registry files directly
are netaddr's own answers: for a sample of every registered OUI, both OUIs registered
twice, unregistered ones, and every spelling netaddr accepts or refuses."""

import random
import subprocess
import sys

import pytest
from netaddr import EUI, NotRegisteredError
from netaddr.core import AddrFormatError

from otsec.analysis import vendors
from otsec.analysis.vendors import mac_vendor


def netaddr_vendor(mac):
    """The lookup as otsec wrote it before (EUI(...).oui.registration())."""
    if not mac:
        return None
    try:
        return EUI(mac).oui.registration().org.strip().rstrip(",")
    except (NotRegisteredError, AddrFormatError, IndexError, ValueError):
        return None


def registered_ouis() -> list[int]:
    return sorted(int(oui) for oui in vendors._oui_index() if oui)


def mac_of(oui: int, tail: str = "01:02:03") -> str:
    h = "%06x" % oui
    return f"{h[0:2]}:{h[2:4]}:{h[4:6]}:{tail}"


def test_every_25th_registered_oui_in_both_cases():
    ouis = registered_ouis()
    assert len(ouis) > 30000          # the IEEE registry, not an empty or partial index
    for oui in ouis[::25]:
        for mac in (mac_of(oui), mac_of(oui).upper()):
            assert mac_vendor(mac) == netaddr_vendor(mac), mac


def test_ouis_registered_twice_give_the_first_registration():
    lines = (vendors._registry() / "oui.idx").read_bytes().split(b"\n")
    seen, twice = set(), set()
    for line in lines:
        oui = line.partition(b",")[0]
        (twice if oui in seen else seen).add(oui)
    twice.discard(b"")
    assert twice                      # the registry has such OUIs: the case is exercised
    for oui in twice:
        mac = mac_of(int(oui))
        assert mac_vendor(mac) == netaddr_vendor(mac) is not None, mac


def test_known_vendors_and_unregistered_addresses():
    assert mac_vendor("00:1b:1b:01:02:03") == "Siemens AG"
    assert mac_vendor("00:1B:1B:AA:BB:CC") == "Siemens AG"
    assert mac_vendor("02:00:0a:0a:01:0a") is None      # locally administered: no OUI
    assert mac_vendor("ff:ff:ff:ff:ff:ff") is None      # broadcast
    rng = random.Random(6)
    for _ in range(500):
        mac = mac_of(rng.getrandbits(24), "%02x:%02x:%02x" % tuple(rng.getrandbits(8) for _ in range(3)))
        assert mac_vendor(mac) == netaddr_vendor(mac), mac


@pytest.mark.parametrize("mac", [
    None, "", "00-1b-1b-01-02-03", "001b.1b01.0203", "001b1b010203", "0:1b:1b:1:2:3",
    "00:1b:1b:01:02:03\n", " 00:1b:1b:01:02:03", "00:1b:1b:01:02", "00:1b:1b:01:02:03:04:05",
    "zz:zz:zz:zz:zz:zz", "\u0660\u0660:1b:1b:01:02:03", "00:1b:1b:01:02:0\u0663", 0x001B1B010203,
])
def test_other_spellings_get_netaddrs_answer(mac):
    assert mac_vendor(mac) == netaddr_vendor(mac)


def test_a_lookup_reads_the_index_once_and_does_not_import_netaddr():
    """netaddr's own lookup costs ~60 ms at the first address (its import, both indexes)."""
    code = ("import sys; from otsec.analysis.vendors import mac_vendor; "
            "assert mac_vendor('00:1b:1b:01:02:03') == 'Siemens AG'; "
            "assert mac_vendor('00:1b:1b:01:02:04') == 'Siemens AG'; "
            "import otsec.analysis.vendors as v; print(v._oui_index.cache_info().misses, "
            "v._oui_organisation.cache_info().hits, 'netaddr' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1", "False"]
