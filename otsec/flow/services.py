"""Service names for server ports, used to label flows no decoder recognised.

The label is a hint from the port only; the detections say so when they rely on it.
Names follow the IANA service registry where it has one.
"""

from __future__ import annotations

TCP_SERVICES: dict[int, str] = {
    20: "ftp-data", 21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "dns", 80: "http",
    88: "kerberos", 102: "iso-tsap", 110: "pop3", 135: "msrpc", 139: "netbios-ssn",
    143: "imap", 389: "ldap", 443: "https", 445: "smb", 502: "modbus", 636: "ldaps",
    789: "redlion-crimson", 1433: "mssql", 1883: "mqtt", 1911: "niagara-fox",
    2404: "iec-104", 3306: "mysql", 3389: "rdp", 4840: "opcua", 4843: "opcua-tls",
    5432: "postgresql", 5800: "vnc-http", 5900: "vnc", 5901: "vnc", 5902: "vnc", 5903: "vnc",
    5985: "winrm", 5986: "winrm-https", 8080: "http-alt", 8443: "https-alt", 8883: "mqtts",
    9600: "omron-fins", 18245: "ge-srtp", 20000: "dnp3", 44818: "enip",
}

UDP_SERVICES: dict[int, str] = {
    53: "dns", 67: "dhcp", 68: "dhcp", 69: "tftp", 123: "ntp", 137: "netbios-ns",
    138: "netbios-dgm", 161: "snmp", 162: "snmp-trap", 514: "syslog", 1900: "ssdp",
    2222: "enip-io", 2404: "iec-104", 5353: "mdns", 20000: "dnp3", 34964: "profinet-cm",
    44818: "enip", 47808: "bacnet",
}


def service_name(transport: str, port: int) -> str | None:
    table = TCP_SERVICES if transport == "tcp" else UDP_SERVICES if transport == "udp" else None
    return table.get(port) if table else None
