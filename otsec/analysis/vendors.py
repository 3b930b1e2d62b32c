"""The organisation registered for a MAC address's OUI, from the IEEE registry that netaddr
ships, without netaddr's start-up cost.

``EUI(mac).oui.registration()`` imports netaddr and parses its whole OUI and IAB indexes
(~60 ms) and then opens the registry file again for every address. Here netaddr's data
files are read directly, the OUI index only (~8 ms), and each OUI is looked up once::

    oui.idx   <OUI as decimal>,<offset>,<size>     one line per registration; the first
              1108370,323,147                       line of an OUI is its registration 0
    oui.txt   at <offset>, <size> bytes:
              10-EA-B0   (hex)           Espressif Inc.       <- the organisation
              10EAB0     (base 16)       Espressif Inc.
                                         Shanghai  ...

Addresses written as otsec writes them (``aa:bb:cc:dd:ee:ff``) take this path; any other
spelling, or data files that are not plain files (a zipped install), go through netaddr
itself, so that every input gets netaddr's answer.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

#: The spelling of a MAC address that the capture layer writes (any hex case).
CANONICAL_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")

#: Distinct OUIs whose organisation is remembered (a site has a few dozen vendors).
OUI_CACHE = 4096

#: Where netaddr keeps its registry files, inside its package directory.
REGISTRY_DIR = "eui"


def mac_vendor(mac: str | None) -> str | None:
    """Organisation registered for the MAC's OUI (IEEE registry shipped with netaddr)."""
    if not mac:
        return None
    if type(mac) is not str or CANONICAL_MAC.fullmatch(mac) is None:
        return _netaddr_vendor(mac)
    try:
        return _oui_organisation(int(mac[0:2] + mac[3:5] + mac[6:8], 16))
    except OSError:
        return _netaddr_vendor(mac)
    except (IndexError, ValueError):   # as netaddr fails on a damaged registry record
        return None


@lru_cache(maxsize=1)
def _registry() -> Path:
    """netaddr's registry directory, found without importing netaddr (~10 ms)."""
    return Path(find_spec("netaddr").submodule_search_locations[0], REGISTRY_DIR)


@lru_cache(maxsize=1)
def _oui_index() -> dict[bytes, bytes]:
    """OUI (decimal, as the index spells it) -> b"offset,size" of its registration 0."""
    index: dict[bytes, bytes] = {}
    for line in reversed((_registry() / "oui.idx").read_bytes().split(b"\n")):
        oui, _, where = line.partition(b",")
        index[oui] = where             # read backwards: an OUI's first line is kept
    return index


@lru_cache(maxsize=OUI_CACHE)
def _oui_organisation(oui: int) -> str | None:
    """The organisation of registration 0 of ``oui``, as netaddr's ``OUI(oui).registration().org``
    then stripped of blanks and trailing commas; None when the OUI is not registered."""
    where = _oui_index().get(b"%d" % oui)
    if where is None:
        return None
    offset, size = (int(n) for n in where.split(b","))
    with open(_registry() / "oui.txt", "rb") as registry:
        registry.seek(offset)
        record = registry.read(size).decode("utf-8")
    org = ""
    for line in record.split("\n"):
        if "(hex)" in line:
            org = line.split(None, 2)[2]
    return org.strip().rstrip(",")


def _netaddr_vendor(mac) -> str | None:
    """netaddr's own lookup, for spellings other than the canonical one."""
    from netaddr import EUI, NotRegisteredError
    from netaddr.core import AddrFormatError

    try:
        return EUI(mac).oui.registration().org.strip().rstrip(",")
    except (NotRegisteredError, AddrFormatError, IndexError, ValueError):
        return None
