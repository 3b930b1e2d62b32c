"""otsec: OT network security monitor and segmentation auditor."""

__version__ = "0.1.0"
