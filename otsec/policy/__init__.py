"""The segmentation policy: IEC 62443 zones, assets and conduits (docs/policy.md).

``load_policy(path)`` returns a validated :class:`Policy` or raises :class:`PolicyError`
carrying every problem as ``FILE:LINE: message``.
"""

from otsec.policy.loader import PolicyError, load_policy, parse_policy
from otsec.policy.model import Policy

__all__ = ["Policy", "PolicyError", "load_policy", "parse_policy"]
