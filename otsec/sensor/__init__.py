"""Continuous sensor mode: a live interface or a pcap directory, run for months.

    source (sources.py) ─► Engine ─► Checker / Learner ─► SensorStore (SQLite, WAL)
                                                       ├► JSON lines, syslog RFC 5424 / CEF (outputs.py)
                                                       └► evidence pcaps (evidence.py)

:class:`~otsec.sensor.runner.Sensor` ties them together; docs/sensor.md explains deployment.
"""

from otsec.sensor.runner import Sensor, SensorConfig, parse_duration

__all__ = ["Sensor", "SensorConfig", "parse_duration"]
