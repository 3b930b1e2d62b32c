"""Capture stage: read packets from files and take apart their link, IP and TCP/UDP headers."""

from otsec.capture.files import CaptureError, CaptureReader, has_capture_magic
from otsec.capture.packet import MALFORMED_REASONS, REASONS, parse_packet

__all__ = ["CaptureError", "CaptureReader", "has_capture_magic", "MALFORMED_REASONS", "REASONS", "parse_packet"]
