"""The built-in protocol decoders.

Adding a protocol means writing its module (constants table, wire diagram, ``probe``,
``frame``, ``new_state``, ``decode``, exported as ``DECODER``) and adding one line here.
The flow layer, policy, detections and storage never change for a new protocol.
"""

from otsec.decoders import modbus, opcua, s7comm
from otsec.decoders.base import Decoder

BUILTIN: tuple[Decoder, ...] = (
    modbus.DECODER,
    s7comm.DECODER,   # TPKT/COTP carrying S7comm and S7comm-plus
    opcua.DECODER,
)
