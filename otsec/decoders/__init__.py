"""Protocol decoders: pure functions of bytes (see base.py for the contract, registry.py for the list)."""
