"""The segmentation policy: IEC 62443 zones, assets and conduits (docs/policy.md).

``load_policy(path)`` returns a validated :class:`Policy` or raises :class:`PolicyError`
carrying every problem as ``FILE:LINE: message``. The names are loaded on first use: the
model's tables are needed by every command, the YAML loader only by those given a policy.
"""

from importlib import import_module

#: Exported name -> the module that defines it.
EXPORTS = {"Policy": "otsec.policy.model", "PolicyError": "otsec.policy.loader",
           "load_policy": "otsec.policy.loader", "parse_policy": "otsec.policy.loader"}

__all__ = list(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(EXPORTS[name]), name)
    return value
