"""Siemens S7 over ISO-on-TCP (port 102): TPKT/COTP, S7comm (0x32) and S7comm-plus (0x72).

One framed message is one TPKT. COTP data TPDUs are reassembled per direction until the
end-of-TSDU bit; the TSDU is then decoded as S7comm or S7comm-plus
(:mod:`otsec.decoders.s7comm_plus`). TPKT/COTP helpers live in :mod:`otsec.decoders.cotp`.

S7comm PDU (one COTP TSDU)::

    +------+--------+-----------+---------+-----------+----------+--------------+-------+------+
    | 0x32 | ROSCTR | redundancy| PDU ref | param len | data len | [err class,  | param | data |
    |      | 1 byte | id (2)    | BE16    | BE16      | BE16     |  err code]   |       |      |
    +------+--------+-----------+---------+-----------+----------+--------------+-------+------+
    ROSCTR 1 Job, 2 Ack, 3 Ack_Data, 7 Userdata; the error bytes exist for 2 and 3 only.

    Job/Ack_Data param:  function(1) | function-specific ...
      Read/Write Var item (S7ANY): 0x12 | len | syntax id 0x10 | transport size | count(2) |
                                   DB(2) | area | address(3) = byte << 3 | bit
      data item: return code | transport size | length(2, bits for BIT/BYTE/INT) | value | [fill]
      block functions: ... | filename length | "_0A00001P" (file id, block type, number, filesystem)
      PI-Service: function | 7 bytes | param block length(2) | param block | name length | name
    Userdata param: 00 01 12 | param len | method | type<<4 | group | subfunction | sequence
                    [| data unit ref | last data unit | error code(2)]   (method 0x12 only)
      data: return code | transport size | length(2) | payload (e.g. SZL id, index, records)
      an answer longer than a PDU: payloads of the units with one data unit ref, reassembled
      until "last data unit" is 0x00 (Yes), decoded then
      alarm message (CPU functions): [S7 time(8)] | function | object count | objects
        request/push object: 0x12 | len | syntax id | values n | event id(4) | states |
                             n Read Var style data items (associated values)
        response object:     return code
        ALARM query answer:  0x00 | count | return code | size | complete length(2) |
                             objects: len | 2 | alarm type | event id(4) | 1 | event state |
                             ack going | ack coming [| time | value | time | value (ALARM_S)]
      TIS (programmer commands): param size(2) | data size(2) | params | item count(2) | items
        push answering Variable status: data items; Modify variable/Force: return codes

Names of functions, areas, return codes, userdata groups and subfunctions are Wireshark's.
Operation classes: see docs/protocols/s7comm.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from otsec.decoders import cotp
from otsec.decoders.base import NEED_MORE, UNFRAMEABLE, Decoder
from otsec.decoders.s7comm_plus import PLUS_ID, PlusState, decode_plus, plausible_start
from otsec.model import Event, Target

S7_ID = 0x32
S7_PORT = 102

ROSCTR_JOB = 1
ROSCTR_ACK = 2
ROSCTR_ACK_DATA = 3
ROSCTR_USERDATA = 7
ROSCTR_NAMES = {ROSCTR_JOB: "Job", ROSCTR_ACK: "Ack", ROSCTR_ACK_DATA: "Ack_Data",
                ROSCTR_USERDATA: "Userdata"}
_HEADER_LEN = {ROSCTR_JOB: 10, ROSCTR_ACK: 12, ROSCTR_ACK_DATA: 12, ROSCTR_USERDATA: 10}
#: ROSCTR, PDU reference, parameter length, data length (protocol and redundancy ids skipped).
_S7_HEADER = struct.Struct(">xBxxHHH")
#: S7ANY item after the syntax id: transport size, length, DB, area, 24-bit bit address.
_S7ANY = struct.Struct(">BHHBBH")

#: Header error class -> Wireshark name (``s7comm.header.errcls``).
ERROR_CLASS_NAMES = {
    0x00: "No error", 0x81: "Application relationship", 0x82: "Object definition",
    0x83: "No resources available", 0x84: "Error on service processing",
    0x85: "Error on supplies", 0x87: "Access error",
}
#: (class << 8 | code) -> Wireshark name: every entry of its ``param_errcode_names``
#: (field ``s7comm.param.errcod``, as tshark 4.0 lists it). Other codes are reported by number.
ERROR_CODE_NAMES = {
    0x0000: "No error", 0x0110: "Invalid block number", 0x0111: "Invalid request length",
    0x0112: "Invalid parameter", 0x0113: "Invalid block type", 0x0114: "Block not found",
    0x0115: "Block already exists", 0x0116: "Block is write-protected",
    0x0117: "The block/operating system update is too large", 0x0118: "Invalid block number",
    0x0119: "Incorrect password entered", 0x011A: "PG resource error",
    0x011B: "PLC resource error", 0x011C: "Protocol error",
    0x011D: "Too many blocks (module-related restriction)",
    0x011E: "There is no longer a connection to the database, or S7DOS handle is invalid",
    0x011F: "Result buffer too small", 0x0120: "End of block list",
    0x0140: "Insufficient memory available",
    0x0141: "Job cannot be processed because of a lack of resources",
    0x8001: "The requested service cannot be performed while the block is in the current status",
    0x8003: "S7 protocol error: Error occurred while transferring the block",
    0x8100: "Application, general error: Service unknown to remote module",
    0x8104: "This service is not implemented on the module or a frame error was reported",
    0x8204: "The type specification for the object is inconsistent",
    0x8205: "A copied block already exists and is not linked",
    0x8301: "Insufficient memory space or work memory on the module, or specified storage medium not accessible",
    0x8302: "Too few resources available or the processor resources are not available",
    0x8304: "No further parallel upload possible. There is a resource bottleneck",
    0x8305: "Function not available",
    0x8306: "Insufficient work memory (for copying, linking, loading AWP)",
    0x8307: "Not enough retentive work memory (for copying, linking, loading AWP)",
    0x8401: "S7 protocol error: Invalid service sequence (for example, loading or uploading a block)",
    0x8402: "Service cannot execute owing to status of the addressed object",
    0x8404: "S7 protocol: The function cannot be performed",
    0x8405: "Remote block is in DISABLE state (CFB). The function cannot be performed",
    0x8500: "S7 protocol error: Wrong frames",
    0x8503: "Alarm from the module: Service canceled prematurely",
    0x8701: "Error addressing the object on the communications partner (for example, area length error)",
    0x8702: "The requested service is not supported by the module",
    0x8703: "Access to object refused", 0x8704: "Access error: Object damaged",
    0xD001: "Protocol error: Illegal job number", 0xD002: "Parameter error: Illegal job variant",
    0xD003: "Parameter error: Debugging function not supported by module",
    0xD004: "Parameter error: Illegal job status",
    0xD005: "Parameter error: Illegal job termination",
    0xD006: "Parameter error: Illegal link disconnection ID",
    0xD007: "Parameter error: Illegal number of buffer elements",
    0xD008: "Parameter error: Illegal scan rate",
    0xD009: "Parameter error: Illegal number of executions",
    0xD00A: "Parameter error: Illegal trigger event",
    0xD00B: "Parameter error: Illegal trigger condition",
    0xD011: "Parameter error in path of the call environment: Block does not exist",
    0xD012: "Parameter error: Wrong address in block",
    0xD014: "Parameter error: Block being deleted/overwritten",
    0xD015: "Parameter error: Illegal tag address",
    0xD016: "Parameter error: Test jobs not possible, because of errors in user program",
    0xD017: "Parameter error: Illegal trigger number", 0xD025: "Parameter error: Invalid path",
    0xD026: "Parameter error: Illegal access type",
    0xD027: "Parameter error: This number of data blocks is not permitted",
    0xD031: "Internal protocol error", 0xD032: "Parameter error: Wrong result buffer length",
    0xD033: "Protocol error: Wrong job length",
    0xD03F: "Coding error: Error in parameter section (for example, reserve bytes not equal to 0)",
    0xD041: "Data error: Illegal status list ID", 0xD042: "Data error: Illegal tag address",
    0xD043: "Data error: Referenced job not found, check job data",
    0xD044: "Data error: Illegal tag value, check job data",
    0xD045: "Data error: Exiting the ODIS control is not allowed in HOLD",
    0xD046: "Data error: Illegal measuring stage during run-time measurement",
    0xD047: "Data error: Illegal hierarchy in 'Read job list'",
    0xD048: "Data error: Illegal deletion ID in 'Delete job'",
    0xD049: "Invalid substitute ID in 'Replace job'", 0xD04A: "Error executing 'program status'",
    0xD05F: "Coding error: Error in data section (for example, reserve bytes not equal to 0, ...)",
    0xD061: "Resource error: No memory space for job", 0xD062: "Resource error: Job list full",
    0xD063: "Resource error: Trigger event occupied",
    0xD064: "Resource error: Not enough memory space for one result buffer element",
    0xD065: "Resource error: Not enough memory space for several  result buffer elements",
    0xD066: "Resource error: The timer available for run-time measurement is occupied by another job",
    0xD067: "Resource error: Too many 'modify tag' jobs active (in particular multi-processor operation)",
    0xD081: "Function not permitted in current mode", 0xD082: "Mode error: Cannot exit HOLD mode",
    0xD0A1: "Function not permitted in current protection level",
    0xD0A2: "Function not possible at present, because a function is running that modifies memory",
    0xD0A3: "Too many 'modify tag' jobs active on the I/O (in particular multi-processor operation)",
    0xD0A4: "'Forcing' has already been established", 0xD0A5: "Referenced job not found",
    0xD0A6: "Job cannot be disabled/enabled",
    0xD0A7: "Job cannot be deleted, for example because it is currently being read",
    0xD0A8: "Job cannot be replaced, for example because it is currently being read or deleted",
    0xD0A9: "Job cannot be read, for example because it is currently being deleted",
    0xD0AA: "Time limit exceeded in processing operation",
    0xD0AB: "Invalid job parameters in process operation",
    0xD0AC: "Invalid job data in process operation", 0xD0AD: "Operating mode already set",
    0xD0AE: "The job was set up over a different connection and can only be handled over this connection",
    0xD0C1: "At least one error has been detected while accessing the tag(s)",
    0xD0C2: "Change to STOP/HOLD mode",
    0xD0C3: "At least one error was detected while accessing the tag(s). Mode change to STOP/HOLD",
    0xD0C4: "Timeout during run-time measurement",
    0xD0C5: "Display of block stack inconsistent, because blocks were deleted/reloaded",
    0xD0C6: "Job was automatically deleted as the jobs it referenced have been deleted",
    0xD0C7: "The job was automatically deleted because STOP mode was exited",
    0xD0C8: "'Block status' aborted because of inconsistencies between test job and running program",
    0xD0C9: "Exit the status area by resetting OB90",
    0xD0CA: "Exiting the status range by resetting OB90 and access error reading tags before exiting",
    0xD0CB: "The output disable for the peripheral outputs has been activated again",
    0xD0CC: "The amount of data for the debugging functions is restricted by the time limit",
    0xD201: "Syntax error in block name", 0xD202: "Syntax error in function parameters",
    0xD205: "Linked block already exists in RAM: Conditional copying is not possible",
    0xD206: "Linked block already exists in EPROM: Conditional copying is not possible",
    0xD208: "Maximum number of copied (not linked) blocks on module exceeded",
    0xD209: "(At least) one of the given blocks not found on the module",
    0xD20A: "The maximum number of blocks that can be linked with one job was exceeded",
    0xD20B: "The maximum number of blocks that can be deleted with one job was exceeded",
    0xD20C: "OB cannot be copied because the associated priority class does not exist",
    0xD20D: "SDB cannot be interpreted (for example, unknown number)",
    0xD20E: "No (further) block available", 0xD20F: "Module-specific maximum block size exceeded",
    0xD210: "Invalid block number", 0xD212: "Incorrect header attribute (run-time relevant)",
    0xD213: "Too many SDBs. Note the restrictions on the module being used",
    0xD216: "Invalid user program - reset module",
    0xD217: "Protection level specified in module properties not permitted",
    0xD218: "Incorrect attribute (active/passive)",
    0xD219: "Incorrect block lengths (for example, incorrect length of first section or of the whole block)",
    0xD21A: "Incorrect local data length or write-protection code faulty",
    0xD21B: "Module cannot compress or compression was interrupted early",
    0xD21D: "The volume of dynamic project data transferred is illegal",
    0xD21E: "Unable to assign parameters to a module (such as FM, CP). The system data could not be linked",
    0xD220: "Invalid programming language. Note the restrictions on the module being used",
    0xD221: "The system data for connections or routing are not valid",
    0xD222: "The system data of the global data definition contain invalid parameters",
    0xD223: "Error in instance data block for communication function block or maximum number of instance DBs exceeded",
    0xD224: "The SCAN system data block contains invalid parameters",
    0xD225: "The DP system data block contains invalid parameters",
    0xD226: "A structural error occurred in a block",
    0xD230: "A structural error occurred in a block",
    0xD231: "At least one loaded OB cannot be copied because the associated priority class does not exist",
    0xD232: "At least one block number of a loaded block is illegal",
    0xD234: "Block exists twice in the specified memory medium or in the job",
    0xD235: "The block contains an incorrect checksum",
    0xD236: "The block does not contain a checksum",
    0xD237: "You are about to load the block twice, i.e. a block with the same time stamp already exists on the CPU",
    0xD238: "At least one of the blocks specified is not a DB",
    0xD239: "At least one of the DBs specified is not available as a linked variant in the load memory",
    0xD23A: "At least one of the specified DBs is considerably different from the copied and linked variant",
    0xD240: "Coordination rules violated",
    0xD241: "The function is not permitted in the current protection level",
    0xD242: "Protection violation while processing F blocks",
    0xD250: "Update and module ID or version do not match",
    0xD251: "Incorrect sequence of operating system components", 0xD252: "Checksum error",
    0xD253: "No executable loader available; update only possible using a memory card",
    0xD254: "Storage error in operating system", 0xD280: "Error compiling block in S7-300 CPU",
    0xD2A1: "Another block function or a trigger on a block is active",
    0xD2A2: "A trigger is active on a block. Complete the debugging function first",
    0xD2A3: "The block is not active (linked), the block is occupied or the block is currently marked for deletion",
    0xD2A4: "The block is already being processed by another block function",
    0xD2A6: "It is not possible to save and change the user program simultaneously",
    0xD2A7: "The block has the attribute 'unlinked' or is not processed",
    0xD2A8: "An active debugging function is preventing parameters from being assigned to the CPU",
    0xD2A9: "New parameters are being assigned to the CPU",
    0xD2AA: "New parameters are currently being assigned to the modules",
    0xD2AB: "The dynamic configuration limits are currently being changed",
    0xD2AC: "A running active or deactivate assignment (SFC 12) is temporarily preventing R-KiR process",
    0xD2B0: "An error occurred while configuring in RUN (CiR)",
    0xD2C0: "The maximum number of technological objects has been exceeded",
    0xD2C1: "The same technology data block already exists on the module",
    0xD2C2: "Downloading the user program or downloading the hardware configuration is not possible",
    0xD401: "Information function unavailable", 0xD402: "Information function unavailable",
    0xD403: "Service has already been logged on/off (Diagnostics/PMC)",
    0xD404: "Maximum number of nodes reached. No more logons possible for diagnostics/PMC",
    0xD405: "Service not supported or syntax error in function parameters",
    0xD406: "Required information currently unavailable", 0xD407: "Diagnostics error occurred",
    0xD408: "Update aborted", 0xD409: "Error on DP bus",
    0xD601: "Syntax error in function parameter", 0xD602: "Incorrect password entered",
    0xD603: "The connection has already been legitimized",
    0xD604: "The connection has already been enabled",
    0xD605: "Legitimization not possible because password does not exist",
    0xD801: "At least one tag address is invalid", 0xD802: "Specified job does not exist",
    0xD803: "Illegal job status", 0xD804: "Illegal cycle time (illegal time base or multiple)",
    0xD805: "No more cyclic read jobs can be set up",
    0xD806: "The referenced job is in a state in which the requested function cannot be performed",
    0xD807: "Function aborted due to overload, meaning executing the read cycle takes longer than the set scan cycle time",
    0xDC01: "Date and/or time invalid", 0xE201: "CPU is already the master",
    0xE202: "Connect and update not possible due to different user program in flash module",
    0xE203: "Connect and update not possible due to different firmware",
    0xE204: "Connect and update not possible due to different memory configuration",
    0xE205: "Connect/update aborted due to synchronization error",
    0xE206: "Connect/update denied due to coordination violation",
    0xEF01: "S7 protocol error: Error at ID2; only 00H permitted in job",
    0xEF02: "S7 protocol error: Error at ID2; set of resources does not exist",
}

F_READ_VAR = 0x04
F_WRITE_VAR = 0x05
F_REQUEST_DOWNLOAD = 0x1A
F_DOWNLOAD_BLOCK = 0x1B
F_DOWNLOAD_ENDED = 0x1C
F_START_UPLOAD = 0x1D
F_UPLOAD = 0x1E
F_END_UPLOAD = 0x1F
F_PI_SERVICE = 0x28
F_PLC_STOP = 0x29
F_SETUP_COMM = 0xF0
#: Job function -> (Wireshark name, operation class). Upload is "program": it extracts logic.
JOB_FUNCTIONS = {
    0x00: ("CPU services", "other"),
    F_READ_VAR: ("Read Var", "read"),
    F_WRITE_VAR: ("Write Var", "write"),
    F_REQUEST_DOWNLOAD: ("Request download", "program"),
    F_DOWNLOAD_BLOCK: ("Download block", "program"),
    F_DOWNLOAD_ENDED: ("Download ended", "program"),
    F_START_UPLOAD: ("Start upload", "program"),
    F_UPLOAD: ("Upload", "program"),
    F_END_UPLOAD: ("End upload", "program"),
    F_PI_SERVICE: ("PI-Service", "control"),
    F_PLC_STOP: ("PLC Stop", "control"),
    F_SETUP_COMM: ("Setup communication", "session"),
}
_FILENAME_FUNCTIONS = frozenset({F_REQUEST_DOWNLOAD, F_DOWNLOAD_BLOCK, F_DOWNLOAD_ENDED,
                                 F_START_UPLOAD})

#: PI service name -> operation class; names not listed are "control" (a PI starts a
#: program-invocation on the PLC), NC file services ``_N_F_*`` are "program".
PI_SERVICE_OPS = {
    "P_PROGRAM": "control",   # start/stop the user program (also carried by PLC Stop)
    "_INSE": "program",       # activate (insert) downloaded blocks
    "_DELE": "program",       # delete blocks
    "_MODU": "program",       # copy RAM to ROM
    "_GARB": "program",       # compress memory
    "_N_LOGIN_": "session",
    "_N_LOGOUT": "session",
}

#: Area code -> (short name used in targets, Wireshark name).
AREAS = {
    0x03: ("SI200", "System info of 200 family"), 0x05: ("SF200", "System flags of 200 family"),
    0x06: ("AI200", "Analog inputs of 200 family"), 0x07: ("AQ200", "Analog outputs of 200 family"),
    0x01: ("DR", "Data record"),
    0x1C: ("C", "S7 counters (C)"), 0x1D: ("T", "S7 timers (T)"),
    0x1E: ("IEC C", "IEC counters (200 family)"), 0x1F: ("IEC T", "IEC timers (200 family)"),
    0x80: ("P", "Direct peripheral access (P)"), 0x81: ("I", "Inputs (I)"),
    0x82: ("Q", "Outputs (Q)"), 0x83: ("M", "Flags (M)"), 0x84: ("DB", "Data blocks (DB)"),
    0x85: ("DI", "Instance data blocks (DI)"), 0x86: ("L", "Local data (L)"),
    0x87: ("V", "Unknown yet (V)"),
}
_NUMBERED_AREAS = frozenset({0x1C, 0x1D, 0x1E, 0x1F})   # address is an element number

SYNTAX_S7ANY = 0x10
SYNTAX_DBREAD = 0xB0
SYNTAX_IDS = {
    SYNTAX_S7ANY: "S7ANY", 0x13: "PBC-R_ID", 0x15: "ALARM_LOCKFREE", 0x16: "ALARM_IND",
    0x19: "ALARM_ACK", 0x1A: "ALARM_QUERYREQ", 0x1C: "NOTIFY_IND", 0x82: "NCK",
    0x83: "NCK_M", 0x84: "NCK_I", 0xA2: "DRIVEESANY", 0xB2: "1200SYM", SYNTAX_DBREAD: "DBREAD",
}
ITEM_VAR_SPEC = 0x12

#: Item transport size -> (Wireshark name, bytes per element or None for bits).
TRANSPORT_SIZES = {
    1: ("BIT", None), 2: ("BYTE", 1), 3: ("CHAR", 1), 4: ("WORD", 2), 5: ("INT", 2),
    6: ("DWORD", 4), 7: ("DINT", 4), 8: ("REAL", 4), 10: ("TOD", 4), 11: ("TIME", 4),
    12: ("S5TIME", 2), 15: ("DATE_AND_TIME", 8), 28: ("COUNTER", 2), 29: ("TIMER", 2),
    30: ("IEC TIMER", 4), 31: ("IEC COUNTER", 4), 32: ("HS COUNTER", 4),
}
#: Data-item transport sizes whose length field counts bits (BIT, BYTE/WORD/DWORD, INTEGER).
_BIT_LENGTH_SIZES = frozenset({0x03, 0x04, 0x05})

RC_SUCCESS = 0xFF
RC_RESERVED = 0x00            # the return code of items in requests (Write Var)
_RC_WITH_DATA = frozenset({RC_SUCCESS, RC_RESERVED})
RETURN_CODES = {
    0x00: "Reserved", 0x01: "Hardware error", 0x03: "Accessing the object not allowed",
    0x05: "Invalid address", 0x06: "Data type not supported", 0x07: "Data type inconsistent",
    0x0A: "Object does not exist", RC_SUCCESS: "Success",
}

#: Block type letters in block file names -> Wireshark block type name.
BLOCK_TYPES = {"08": "OB", "0A": "DB", "0B": "SDB", "0C": "FC", "0D": "SFC", "0E": "FB", "0F": "SFB"}
FILESYSTEMS = {"P": "Passive (copied, but not chained) module", "A": "Active embedded module",
               "B": "Active as well as passive module"}

UD_TYPES = {0: "Push", 4: "Request", 8: "Response", 3: "NC Push", 7: "NC Request", 11: "NC Response"}
_UD_KIND = {0: "notification", 3: "notification", 4: "request", 7: "request",
            8: "response", 11: "response"}
UD_GROUP_MODE_TRANSITION = 0
UD_GROUP_CPU = 4
UD_GROUP_SECURITY = 5
UD_GROUPS = {0: "Mode-transition", 1: "Programmer commands", 2: "Cyclic services",
             3: "Block functions", 4: "CPU functions", 5: "Security", 6: "PBC BSEND/BRECV",
             7: "Time functions", 15: "NC programming"}
#: group -> subfunction -> (Wireshark name, operation class).
UD_SUBFUNCTIONS = {
    1: {1: ("Block status", "diagnostic"), 2: ("Variable status", "read"),
        3: ("Output ISTACK", "diagnostic"), 4: ("Output BSTACK", "diagnostic"),
        5: ("Output LSTACK", "diagnostic"), 6: ("Time measurement from to", "diagnostic"),
        7: ("Force selection", "diagnostic"), 8: ("Modify variable", "write"),
        9: ("Force", "write"), 10: ("Breakpoint", "control"), 11: ("Exit HOLD", "control"),
        12: ("Memory reset", "control"), 13: ("Disable job", "diagnostic"),
        14: ("Enable job", "diagnostic"), 15: ("Delete job", "diagnostic"),
        16: ("Read job list", "diagnostic"), 17: ("Read job", "diagnostic"),
        18: ("Replace job", "diagnostic"), 19: ("Block status v2", "diagnostic"),
        22: ("Flash LED", "diagnostic")},
    2: {1: ("Cyclic transfer", "read"), 4: ("Unsubscribe", "read"),
        5: ("Change driven transfer", "read"), 7: ("Change driven transfer modify", "read"),
        8: ("RDREC", "read")},
    3: {1: ("List blocks", "diagnostic"), 2: ("List blocks of type", "diagnostic"),
        3: ("Get block info", "diagnostic")},
    4: {1: ("Read SZL", "diagnostic"), 2: ("Message service", "diagnostic"),
        3: ("Diagnostic message", "diagnostic"), 5: ("ALARM_8 indication", "diagnostic"),
        6: ("NOTIFY indication", "diagnostic"), 7: ("ALARM_8 lock", "diagnostic"),
        8: ("ALARM_8 unlock", "diagnostic"), 9: ("SCAN indication", "diagnostic"),
        11: ("ALARM ack", "diagnostic"), 12: ("ALARM ack indication", "diagnostic"),
        13: ("ALARM lock indication", "diagnostic"), 14: ("ALARM unlock indication", "diagnostic"),
        17: ("ALARM_SQ indication", "diagnostic"), 18: ("ALARM_S indication", "diagnostic"),
        19: ("ALARM query", "diagnostic"), 22: ("NOTIFY_8 indication", "diagnostic")},
    5: {1: ("PLC password", "session")},
    7: {1: ("Read clock", "diagnostic"), 2: ("Set clock", "control"),
        3: ("Read clock (following)", "diagnostic"), 4: ("Set clock", "control")},
    15: {1: ("Request download", "program"), 2: ("Download block", "program"),
         3: ("Continue download", "program"), 4: ("Download ended", "program"),
         6: ("Start upload", "program"), 7: ("Upload", "program"),
         8: ("Continue upload", "program")},
}
#: Mode-transition (group 0) subfunction -> CPU mode it announces (Wireshark ``modetrans``).
MODE_NAMES = {0: "STOP", 1: "Warm Restart", 2: "RUN", 3: "Hot Restart", 4: "HOLD",
              6: "Cold Restart", 9: "RUN_R (H-System redundant)", 11: "LINK-UP", 12: "UPDATE"}
SUB_READ_SZL = 1
UD_GROUP_PROGRAMMER = 1
UD_GROUP_CYCLIC = 2
#: Cyclic-services subfunctions whose request subscribes to a list of addresses (item
#: count, interval timebase, interval factor, then Read Var style items) and whose
#: responses and pushes carry the values (item count, then Read Var style data items).
CYCLIC_SUBSCRIBE = frozenset({1, 5, 7})
#: Programmer-command subfunctions whose request lists variable addresses (TIS data):
#: Variable status (read), Modify variable and Force (write, e.g. from a STEP 7 variable
#: table). Their pushes answer the job: Variable status one data item per address (the
#: values read), Modify variable and Force one return-code byte per address.
SUB_VARIABLE_STATUS, SUB_MODIFY_VARIABLE, SUB_FORCE = 2, 8, 9
_TIS_VARIABLE_JOBS = frozenset({SUB_VARIABLE_STATUS, SUB_MODIFY_VARIABLE, SUB_FORCE})
#: TIS variable address item: memory area, repetition factor (bit number for X areas),
#: DB number, start byte (element number for timers and counters).
_TIS_ITEM = struct.Struct(">BBHH")
#: TIS memory area high nibble -> target area; low nibble is the width (0 bit, 1 byte,
#: 2 word, 3 double word), as in Wireshark's ``s7comm.varstat.req.memory_area``.
TIS_AREAS = {0x0: "M", 0x1: "I", 0x2: "Q", 0x3: "P", 0x7: "DB"}
TIS_TIMER, TIS_COUNTER = 0x54, 0x64
_TIS_WIDTH = {0: 1, 1: 1, 2: 2, 3: 4}
SZL_MODULE_ID = 0x11          # partial list number of module identification
SZL_COMPONENT_ID = 0x1C       # partial list number of component identification
_IDENTIFY_SZL = frozenset({SZL_MODULE_ID, SZL_COMPONENT_ID})
#: SZL 0x001C record index -> identity key.
SZL_001C_KEYS = {1: "system_name", 2: "module_name", 3: "plant_id", 4: "copyright",
                 5: "serial_number", 7: "module_type", 8: "memory_card_serial"}
SZL_0011_RECORD_LEN = 28
SZL_0011_ORDER_NUMBER = 1
SZL_0011_FIRMWARE = 7

UD_PUSH, UD_REQUEST, UD_RESPONSE = 0, 4, 8
#: Userdata parameter method 0x12 ("Res"): the parameter goes on with data unit reference,
#: last data unit and error code (12 bytes in all), as in answers and multi-unit pushes.
UD_METHOD_EXTENDED = 0x12
UD_EXTENDED_PARAM_LEN = 12
#: Groups whose data units are reassembled by data unit reference (Wireshark's default);
#: PBC BSEND/BRECV (6) and NC programming (15) key their fragments differently and their
#: contents are not decoded here.
_OWN_FRAGMENT_GROUPS = frozenset({6, 15})
#: CPU-function subfunctions whose data is an alarm message (Wireshark:
#: s7comm_decode_ud_cpu_alarm_main): [time] | function | object count | objects. Requests
#: and pushes describe each object by a variable specification (12 len syntax id ...),
#: responses give one return code per object. ALARM query answers have their own layout.
SUB_ALARM_QUERY = 19
SUB_SCAN_IND = 9
ALARM_SUBFUNCTIONS = frozenset({5, 6, 7, 8, SUB_SCAN_IND, 11, 12, 13, 14, 17, 18,
                                SUB_ALARM_QUERY, 22})
#: Indications that start with the time the message came (8-byte S7 timestamp): ALARM_8,
#: NOTIFY, ALARM ack, ALARM_SQ, ALARM_S, NOTIFY_8. SCAN has 2 bytes before and after it.
_TIMED_ALARMS = frozenset({5, 6, 12, 17, 18, 22})
S7_TIMESTAMP_LEN = 8
SYNTAX_ALARM_LOCKFREE, SYNTAX_ALARM_IND, SYNTAX_ALARM_ACK = 0x15, 0x16, 0x19
SYNTAX_ALARM_QUERYREQ, SYNTAX_NOTIFY_IND = 0x1A, 0x1C
#: Message-object syntax ids that name an event: associated value count, event id, then
#: states (event state and state for IND/NOTIFY, ack states for IND/ACK/NOTIFY, four
#: event bytes for NOTIFY), then the associated values (IND/NOTIFY) as Read Var data items.
_EVENT_SYNTAXES = frozenset({SYNTAX_ALARM_LOCKFREE, SYNTAX_ALARM_IND, SYNTAX_ALARM_ACK,
                             SYNTAX_NOTIFY_IND})
_SIGNAL_SYNTAXES = frozenset({SYNTAX_ALARM_IND, SYNTAX_NOTIFY_IND})
_ACK_SYNTAXES = frozenset({SYNTAX_ALARM_IND, SYNTAX_ALARM_ACK, SYNTAX_NOTIFY_IND})
#: ALARM query: query type -> Wireshark name; alarm type of a query or an answer object.
ALARM_QUERY_TYPES = {1: "ByAlarmtype", 3: "ByEventID"}
QUERY_BY_ALARM_TYPE, QUERY_BY_EVENT_ID = 1, 3
ALARM_TYPES = {1: "SCAN", 2: "ALARM_8", 4: "ALARM_S"}
ALARM_TYPE_S = 4              # answer objects of ALARM_S carry times and associated values
#: ALARM query answer object: dataset length, 2 unknown bytes, alarm type, event id, 1
#: unknown byte, event state, ack state going, ack state coming.
_QUERY_OBJECT = struct.Struct(">xxxBIxBBB")
#: Event object head after the syntax id: associated value count, event id.
_EVENT_HEAD = struct.Struct(">BI")
#: Data item head: return code, transport size, length.
_ITEM_HEAD = struct.Struct(">BBH")
#: TIS data items count their length in bits for these transport sizes (BYTE/WORD/DWORD,
#: INTEGER), rounded down, and pad every odd-length value (Wireshark's tis_item_value).
_TIS_BIT_LENGTH_SIZES = frozenset({0x04, 0x05})
COMPLETE_LENGTH_UNKNOWN = 0xFFFF

MAX_TSDU_BYTES = 65536        # reassembled COTP TSDU, per direction
MAX_TSDU_FRAGMENTS = 128      # DT TPDUs per TSDU
MAX_DETAIL_ITEMS = 32         # items described in detail / turned into targets
MAX_VALUE_BYTES = 16          # bytes of each written value kept (hex) in detail
MAX_PENDING = 64              # outstanding jobs/userdata requests remembered per connection
MAX_UPLOADS = 16              # upload ids mapped to their block per connection
MAX_TEXT = 64                 # characters kept from PI arguments and similar strings
MAX_ALARM_OBJECTS = 16        # message objects described per alarm message (rest counted)
MAX_DATA_UNIT_BYTES = 65536   # one userdata answer reassembled from its data units
MAX_DATA_UNIT_ANSWERS = 8     # userdata answers being reassembled per connection

# Per-byte lookup tables built once from the name tables above, so that the hot path
# never formats the fallback text of a code that has a name.
_SYNTAX_NAMES = tuple(SYNTAX_IDS.get(b, f"0x{b:02x}") for b in range(256))
_AREA_INFO = tuple(AREAS.get(b, (f"0x{b:02x}", "unknown")) for b in range(256))
_SIZE_INFO = tuple(TRANSPORT_SIZES.get(b, (f"0x{b:02x}", None)) for b in range(256))
_RC_NAMES = tuple(RETURN_CODES.get(b, f"Unknown (0x{b:02x})") for b in range(256))
_UD_TYPE_NAMES = tuple(UD_TYPES.get(t, f"0x{t:x}") for t in range(16))
_UD_GROUP_NAMES = tuple(UD_GROUPS.get(g, f"0x{g:x}") for g in range(16))


@dataclass(slots=True)
class _Tsdu:
    """Fragments awaiting their last one: COTP DT of one direction (until end of TSDU) or
    the data units of one userdata answer (until the last data unit)."""
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass(slots=True)
class S7State:
    """Per-connection state; every table is capped by a named constant."""
    tsdu: dict[bool, _Tsdu] = field(default_factory=dict)          # by from_client
    pending: dict[tuple, tuple] = field(default_factory=dict)      # pair key -> request facts
    uploads: dict[int, Target] = field(default_factory=dict)       # upload id -> block
    data_units: dict[tuple, _Tsdu] = field(default_factory=dict)   # (from_client, ref) -> parts
    plus: PlusState = field(default_factory=PlusState)


def new_state() -> S7State:
    return S7State()


# --------------------------------------------------------------------------- framing

def _s7_start_ok(buf: bytes, start: int, end: int, eot: bool) -> bool:
    """Plausible S7comm header (ROSCTR, reserved bytes, lengths) or S7comm-plus start.

    ``end`` is where the TPDU ends as declared, possibly beyond the bytes at hand.
    """
    if len(buf) - start < 1:
        return False
    if buf[start] == PLUS_ID:
        return plausible_start(buf, start, end)
    if buf[start] != S7_ID or len(buf) - start < 10:
        return False
    rosctr = buf[start + 1]
    if rosctr not in _HEADER_LEN or buf[start + 2] or buf[start + 3]:
        return False
    plen, dlen = struct.unpack_from(">HH", buf, start + 6)
    total = _HEADER_LEN[rosctr] + plen + dlen
    return total == end - start if eot else total > end - start


def probe(buf: bytes, pos: int) -> bool:
    """TPKT v3 + COTP CR/CC with S7 TSAPs, or DT starting an S7comm/S7comm-plus PDU."""
    return cotp.probe_cotp(buf, pos, _s7_start_ok)


def frame(buf: bytes, pos: int) -> int:
    """One TPKT: its declared length (>= 7), NEED_MORE, or UNFRAMEABLE."""
    avail = len(buf) - pos
    if avail < cotp.TPKT_HEADER_LEN:
        return NEED_MORE
    if buf[pos] != cotp.TPKT_VERSION or buf[pos + 1]:
        return UNFRAMEABLE
    length = (buf[pos + 2] << 8) | buf[pos + 3]
    if length < cotp.TPKT_MIN_LEN:
        return UNFRAMEABLE
    return length if avail >= length else NEED_MORE


# --------------------------------------------------------------------------- COTP

def decode(msg: bytes, from_client: bool, state: S7State) -> list[Event]:
    """Decode one TPKT; S7 events come out when a COTP TSDU is complete."""
    try:
        return _decode_tpkt(msg, from_client, state)
    except (IndexError, ValueError, struct.error):
        return [_cotp_event("Malformed TPDU", "notification", ["cotp.truncated_tpdu"])]


def _cotp_event(function: str, kind: str, anomalies: list[str] | None = None,
                code: int | None = None) -> Event:
    return Event(protocol="cotp", kind=kind, function=function, op_class="session",
                 function_code=code, anomalies=anomalies or [])


def _decode_tpkt(msg: bytes, from_client: bool, state: S7State) -> list[Event]:
    size = len(msg)
    # a whole TPKT: version 3, reserved 0, declared length == message length (>= 7)
    if size < cotp.TPKT_MIN_LEN or msg[0] != cotp.TPKT_VERSION or msg[1] \
            or (msg[2] << 8 | msg[3]) != size:
        return [_cotp_event("Malformed TPDU", "notification", ["cotp.invalid_tpkt_length"])]
    li = msg[4]
    if li < 2 or 5 + li > size:
        return [_cotp_event("Malformed TPDU", "notification", ["cotp.invalid_length_indicator"])]
    code = msg[5] & 0xF0
    if code == cotp.COTP_DT:
        return _decode_dt(msg, li, from_client, state)
    if code in (cotp.COTP_CR, cotp.COTP_CC):
        return [_decode_connect(msg, li, code)]
    if code in (cotp.COTP_DR, cotp.COTP_DC):
        ev = _cotp_event("Disconnect Request" if code == cotp.COTP_DR else "Disconnect Confirm",
                         "notification", code=code >> 4)
        if code == cotp.COTP_DR and li >= 6:
            ev.detail["reason"] = msg[11]
        return [ev]
    name = cotp.COTP_TYPE_NAMES.get(code)
    if code == cotp.COTP_ER:
        ev = _cotp_event(name, "notification", ["cotp.tpdu_error"], code >> 4)
        ev.result = "error"
        return [ev]
    if name is not None:
        return [_cotp_event(name, "notification", ["cotp.unexpected_tpdu"], code >> 4)]
    return [_cotp_event(f"Unknown TPDU 0x{msg[5]:02x}", "notification", ["cotp.unknown_tpdu"])]


def _decode_connect(msg: bytes, li: int, code: int) -> Event:
    """CR/CC: TSAPs, TPDU size; rack/slot from the called (destination) TSAP of a CR."""
    is_cr = code == cotp.COTP_CR
    ev = _cotp_event("Connection Request" if is_cr else "Connection Confirm",
                     "request" if is_cr else "response", code=code >> 4)
    ev.pair_key = ("cotp", "connect")
    if li < 6:
        ev.anomalies.append("cotp.invalid_length_indicator")
        return ev
    params = cotp.parse_params(msg, 11, 5 + li)
    detail = ev.detail
    detail["dst_ref"] = int.from_bytes(msg[6:8], "big")
    detail["src_ref"] = int.from_bytes(msg[8:10], "big")
    detail["class"] = msg[10] >> 4
    if cotp.PARAM_TPDU_SIZE in params and params[cotp.PARAM_TPDU_SIZE]:
        detail["tpdu_size"] = 1 << min(params[cotp.PARAM_TPDU_SIZE][0], 16)
    for pcode, key in ((cotp.PARAM_SRC_TSAP, "src_tsap"), (cotp.PARAM_DST_TSAP, "dst_tsap")):
        if pcode in params:
            detail[key] = cotp.tsap_detail(params[pcode])
    dst = detail.get("dst_tsap", {})
    if is_cr and "rack" in dst:
        detail["rack"], detail["slot"] = dst["rack"], dst["slot"]
    if not cotp.S7_TSAP_PARAMS & params.keys():
        ev.anomalies.append("cotp.missing_tsap")
    return ev


def _decode_dt(msg: bytes, li: int, from_client: bool, state: S7State) -> list[Event]:
    payload = msg[5 + li:]
    eot = msg[6] & cotp.DT_EOT
    pending = state.tsdu.get(from_client) if state.tsdu else None
    if not eot:
        if pending is None:
            pending = state.tsdu[from_client] = _Tsdu()
        pending.parts.append(payload)
        pending.size += len(payload)
        if pending.size > MAX_TSDU_BYTES or len(pending.parts) > MAX_TSDU_FRAGMENTS:
            del state.tsdu[from_client]
            return [_cotp_event("Data", "notification", ["cotp.reassembly_overflow"])]
        return []
    if pending is not None:
        del state.tsdu[from_client]
        payload = b"".join(pending.parts) + payload
    if not payload:
        return []
    if payload[0] == S7_ID:
        return [_decode_s7(payload, from_client, state)]
    if payload[0] == PLUS_ID:
        return decode_plus(payload, from_client, state.plus)
    ev = _cotp_event("Data", "notification", ["cotp.unknown_payload"])
    ev.op_class = "other"
    ev.detail["first_byte"] = payload[0]
    return [ev]


# --------------------------------------------------------------------------- S7comm

def _decode_s7(p: bytes, from_client: bool, state: S7State) -> Event:
    if len(p) < 10:
        return Event(protocol="s7comm", kind="notification", function="Truncated PDU",
                     op_class="other", anomalies=["s7comm.truncated_pdu"])
    rosctr, pdu_ref, plen, dlen = _S7_HEADER.unpack_from(p)
    ev = Event(protocol="s7comm", kind="notification", function="Truncated PDU", op_class="other",
               detail={"rosctr": rosctr, "rosctr_name": ROSCTR_NAMES.get(rosctr, "unknown"),
                       "pdu_ref": pdu_ref, "param_length": plen, "data_length": dlen})
    hlen = _HEADER_LEN.get(rosctr)
    if hlen is None:
        ev.function = f"Unknown ROSCTR 0x{rosctr:02x}"
        ev.anomalies.append("s7comm.unknown_rosctr")
        return ev
    if hlen + plen + dlen != len(p):
        ev.anomalies.append("s7comm.length_mismatch")
    param = p[hlen:hlen + plen]
    data = p[hlen + plen:hlen + plen + dlen]
    try:
        if rosctr == ROSCTR_JOB:
            _decode_job(ev, param, data, (from_client, pdu_ref), state)
        elif rosctr == ROSCTR_USERDATA:
            _decode_userdata(ev, param, data, from_client, pdu_ref, state)
        else:
            _decode_ack(ev, p, param, data, (not from_client, pdu_ref), state)
    except (IndexError, ValueError, struct.error):
        ev.anomalies.append("s7comm.truncated_pdu")
    return ev


def _remember(table: dict, key, value, cap: int) -> None:
    if key not in table and len(table) >= cap:
        table.pop(next(iter(table)))
    table[key] = value


def _decode_job(ev: Event, param: bytes, data: bytes, key: tuple, state: S7State) -> None:
    ev.kind = "request"
    ev.pair_key = ("s7comm",) + key
    func = param[0]
    ev.function_code = func
    known = JOB_FUNCTIONS.get(func)
    if known is None:
        ev.function, ev.op_class = f"Unknown function 0x{func:02x}", "other"
        ev.anomalies.append("s7comm.unknown_function")
    else:
        ev.function, ev.op_class = known
    try:
        _job_parameters(ev, func, param, data, state)
    finally:
        _remember(state.pending, ev.pair_key, (func, ev.function, ev.op_class, ev.targets),
                  MAX_PENDING)


def _job_parameters(ev: Event, func: int, param: bytes, data: bytes, state: S7State) -> None:
    if func == F_SETUP_COMM:
        ev.detail.update(_setup_detail(param))
    elif func in (F_READ_VAR, F_WRITE_VAR):
        count = param[1]
        ev.detail["item_count"] = count
        items = _param_items(param, count, ev)
        ev.detail["items"] = items
        if func == F_WRITE_VAR:
            ev.detail["values"] = _value_details(_data_items(data, count)[0])
    elif func in _FILENAME_FUNCTIONS:
        name = param[9:9 + param[8]].decode("latin-1")
        ev.targets.append(_block_target(name, ev))
    elif func in (F_UPLOAD, F_END_UPLOAD):
        upload_id = int.from_bytes(param[4:8], "big")
        ev.detail["upload_id"] = upload_id
        if upload_id in state.uploads:
            ev.targets.append(state.uploads[upload_id])
    elif func == F_PI_SERVICE:
        _decode_pi(ev, param)
    elif func == F_PLC_STOP:
        service = param[7:7 + param[6]].decode("latin-1")
        ev.targets.append(Target(kind="pi_service", name=service))
        ev.detail["pi_service"] = service


def _setup_detail(param: bytes) -> dict:
    amq_calling, amq_called, pdu_length = struct.unpack_from(">HHH", param, 2)
    return {"max_amq_calling": amq_calling, "max_amq_called": amq_called,
            "pdu_length": pdu_length}


def _param_items(param: bytes, count: int, ev: Event) -> list[dict]:
    """Request items -> detail dicts; S7ANY and DBREAD addresses also become targets."""
    items: list[dict] = []
    pos = 2
    for _ in range(count):
        spec, ilen = param[pos], param[pos + 1]
        end = pos + 2 + ilen
        if ilen < 1 or end > len(param):
            raise IndexError("item runs past the parameter part")
        syntax = param[pos + 2]
        item: dict = {"syntax_id": _SYNTAX_NAMES[syntax]}
        if spec != ITEM_VAR_SPEC:
            ev.anomalies.append("s7comm.unknown_item_spec")
        if syntax == SYNTAX_S7ANY and ilen >= 10:
            _s7any_item(param, pos + 3, item, ev)
        elif syntax == SYNTAX_DBREAD and ilen >= 2:
            _dbread_item(param, pos + 3, end, item, ev)
        if len(items) < MAX_DETAIL_ITEMS:
            items.append(item)
        pos = end
    return items


def _s7any_item(param: bytes, at: int, item: dict, ev: Event) -> None:
    tsize, length, db, area, addr_hi, addr_lo = _S7ANY.unpack_from(param, at)
    address = addr_hi << 16 | addr_lo
    short, area_name = _AREA_INFO[area]
    size_name, unit = _SIZE_INFO[tsize]
    if area in _NUMBERED_AREAS:
        start, bit = address, None
        count = length
    else:
        start, bit = address >> 3, address & 7
        count = length * unit if unit else (bit + length + 7) // 8
    item.update({"area": short, "area_name": area_name, "transport_size": size_name,
                 "length": length, "address": start})
    if bit is not None:
        item["bit"] = bit
    db_number = None
    if area in (0x84, 0x85):
        item["db"] = db_number = db
    if len(ev.targets) < MAX_DETAIL_ITEMS:
        ev.targets.append(Target(kind="area", area=short, db=db_number, start=start, count=count))


def _dbread_item(param: bytes, at: int, end: int, item: dict, ev: Event) -> None:
    """DBREAD (S7-400 optimised): n areas of (length, DB, start byte)."""
    areas = param[at]
    item["areas"] = areas
    pos = at + 1
    for _ in range(areas):
        if pos + 5 > end:
            raise IndexError("DBREAD area cut")
        length, db, start = struct.unpack_from(">BHH", param, pos)
        if len(ev.targets) < MAX_DETAIL_ITEMS:
            ev.targets.append(Target(kind="area", area="DB", db=db, start=start, count=length))
        pos += 5


def _data_items(data: bytes, count: int, pos: int = 0) -> tuple[list[tuple], int]:
    """Data items from ``pos`` -> ([(return code, transport size, length in bytes, value
    hex prefix)], position after them).

    Items are padded to an even length except the last one.
    """
    out = []
    for i in range(count):
        rc, tsize, length = _ITEM_HEAD.unpack_from(data, pos)
        nbytes = (length + 7) // 8 if tsize in _BIT_LENGTH_SIZES else length
        if rc not in _RC_WITH_DATA:
            nbytes = 0                      # a failed item carries no value, whatever its length
        if pos + 4 + nbytes > len(data):
            raise IndexError("data item cut")
        out.append((rc, tsize, nbytes, data[pos + 4:pos + 4 + min(nbytes, MAX_VALUE_BYTES)].hex()))
        pos += 4 + nbytes + (nbytes & 1 if i < count - 1 else 0)
    return out, pos


def _block_target(filename: str, ev: Event) -> Target:
    """``_0A00001P`` -> Target(kind="block", name="DB1") and the parts in detail."""
    ev.detail["filename"] = filename[:MAX_TEXT]
    btype = BLOCK_TYPES.get(filename[1:3].upper())
    number = filename[3:8]
    if len(filename) < 8 or btype is None or not (number.isascii() and number.isdigit()):
        ev.anomalies.append("s7comm.invalid_block_filename")
        return Target(kind="block", name=filename[:MAX_TEXT])
    ev.detail["block_type"] = btype
    ev.detail["block_number"] = int(number)
    if len(filename) > 8:
        ev.detail["filesystem"] = FILESYSTEMS.get(filename[8], filename[8])
    return Target(kind="block", name=f"{btype}{int(number)}")


def _decode_pi(ev: Event, param: bytes) -> None:
    """PI-Service: service name, its argument block, and blocks for _INSE/_DELE."""
    blen = int.from_bytes(param[8:10], "big")
    block = param[10:10 + blen]
    at = 10 + blen
    service = param[at + 1:at + 1 + param[at]].decode("latin-1")
    ev.detail["pi_service"] = service
    ev.op_class = PI_SERVICE_OPS.get(service, "program" if service.startswith("_N_F_") else "control")
    ev.targets.append(Target(kind="pi_service", name=service))
    if service in ("_INSE", "_DELE") and len(block) >= 2:
        for i in range(min(block[0], MAX_DETAIL_ITEMS)):
            name = block[2 + 8 * i:10 + 8 * i].decode("latin-1")
            ev.targets.append(_block_target("_" + name, ev))
    elif block:
        ev.detail["arguments"] = block[:MAX_TEXT].decode("latin-1")


def _decode_ack(ev: Event, p: bytes, param: bytes, data: bytes, key: tuple,
                state: S7State) -> None:
    ev.kind = "response"
    ev.pair_key = ("s7comm",) + key
    request = state.pending.pop(ev.pair_key, None)
    err_class, err_code = p[10], p[11]
    func = param[0] if param else (request[0] if request else None)
    ev.function_code = func
    if func is None:
        ev.function, ev.op_class = "Ack", "other"
    else:
        known = JOB_FUNCTIONS.get(func)
        ev.function, ev.op_class = known if known else (f"Unknown function 0x{func:02x}", "other")
    if request is not None and request[0] == func:
        ev.op_class = request[2]
        ev.targets = list(request[3])
    ev.result = "ok"
    if err_class or err_code:
        ev.result = "error"
        ev.status = _error_status(err_class, err_code)
        ev.detail.update({"error_class": err_class, "error_code": err_code})
        return
    if not param:
        return
    if func in (F_READ_VAR, F_WRITE_VAR):
        count = ev.detail["item_count"] = param[1]
        if func == F_READ_VAR:
            codes = [rc for rc, _, _, _ in _data_items(data, count)[0]]
        else:
            codes = list(data[:count])
        _item_results(ev, codes)
    elif func == F_SETUP_COMM:
        ev.detail.update(_setup_detail(param))
    elif func == F_START_UPLOAD and len(param) >= 8:
        upload_id = int.from_bytes(param[4:8], "big")
        ev.detail["upload_id"] = upload_id
        if ev.targets:
            _remember(state.uploads, upload_id, ev.targets[0], MAX_UPLOADS)


def _error_status(err_class: int, err_code: int) -> str:
    combined = err_class << 8 | err_code
    class_name = ERROR_CLASS_NAMES.get(err_class, "Unknown error class")
    code_name = ERROR_CODE_NAMES.get(combined, "Unknown error code")
    return f"{class_name} (0x{err_class:02x}): {code_name} (0x{combined:04x})"


def _item_results(ev: Event, codes: list[int]) -> None:
    ev.detail["item_return_codes"] = [_RC_NAMES[rc] for rc in codes[:MAX_DETAIL_ITEMS]]
    _fail_on(ev, codes)


def _fail_on(ev: Event, codes: list[int]) -> None:
    """Any return code other than Success makes the result an error, the first one named."""
    failed = [f"{RETURN_CODES.get(rc, 'Unknown')} (0x{rc:02x})" for rc in codes if rc != RC_SUCCESS]
    if failed:
        ev.result = "error"
        ev.status = failed[0] if len(failed) == 1 else f"{failed[0]} and {len(failed) - 1} more"


# --------------------------------------------------------------------------- userdata

def _decode_userdata(ev: Event, param: bytes, data: bytes, from_client: bool, pdu_ref: int,
                     state: S7State) -> None:
    ud_type, group, sub, seq = param[5] >> 4, param[5] & 0x0F, param[6], param[7]
    ev.kind = _UD_KIND.get(ud_type, "notification")
    detail = ev.detail
    detail["type"] = _UD_TYPE_NAMES[ud_type]
    detail["funcgroup"] = group
    detail["group_name"] = _UD_GROUP_NAMES[group]
    detail["sequence"] = seq
    ev.function_code = group << 8 | sub
    if group == UD_GROUP_MODE_TRANSITION:
        ev.function, ev.op_class = UD_GROUPS[group], "diagnostic"
        detail["mode"] = MODE_NAMES.get(sub, sub)
    else:
        detail["subfunc"] = sub
        known = UD_SUBFUNCTIONS.get(group, {}).get(sub)
        ev.function, ev.op_class = known if known else (
            f"{UD_GROUPS.get(group, f'Group 0x{group:x}')} subfunction {sub}", "other")
    rc = data[0] if data else None
    if rc is not None:
        detail["return_code"] = rc
    payload = data[4:4 + (data[2] << 8 | data[3])] if len(data) >= 4 else b""
    extended = param[4] == UD_METHOD_EXTENDED and len(param) >= UD_EXTENDED_PARAM_LEN
    if extended and (param[8] or param[9]) and group not in _OWN_FRAGMENT_GROUPS:
        payload = _data_unit(ev, param[8], param[9], payload, from_client, state)
    if ev.kind != "notification":
        requester_is_client = from_client if ev.kind == "request" else not from_client
        ev.pair_key = ("s7comm-ud", requester_is_client, pdu_ref, group, sub)
        if ev.kind == "request":
            _ud_request(ev, group, sub, payload, state)
        else:
            _ud_response(ev, param, extended, rc, state)
    if payload:
        _ud_contents(ev, ud_type, group, sub, rc, payload)


def _data_unit(ev: Event, ref: int, more: int, piece: bytes, from_client: bool,
               state: S7State) -> bytes:
    """Userdata answers longer than a PDU come in data units sharing a reference number
    (Last data unit 0x01 "No" until the last, 0x00 "Yes"). Their contents are decoded once,
    reassembled, at the last unit, as Wireshark does: returns b"" until then. A last unit
    whose earlier units were not seen is decoded alone, as Wireshark does too."""
    ev.detail["data_unit_ref"] = ref
    ev.detail["last_data_unit"] = not more
    if not ref:
        return b"" if more else piece
    key = (from_client, ref)
    units = state.data_units
    pending = units.get(key)
    if pending is None:
        if not more:
            return piece
        pending = _Tsdu()
        _remember(units, key, pending, MAX_DATA_UNIT_ANSWERS)
    pending.parts.append(piece)
    pending.size += len(piece)
    if pending.size > MAX_DATA_UNIT_BYTES:
        del units[key]
        ev.anomalies.append("s7comm.reassembly_overflow")
        return b""
    if more:
        return b""
    del units[key]
    return b"".join(pending.parts)


def _ud_request(ev: Event, group: int, sub: int, payload: bytes, state: S7State) -> None:
    if group == UD_GROUP_CPU and sub == SUB_READ_SZL and len(payload) >= 4:
        szl_id, index = struct.unpack_from(">HH", payload, 0)
        ev.targets.append(Target(kind="szl", name=f"0x{szl_id:04x}", start=index))
        ev.detail["szl_id"] = szl_id
        if szl_id & 0xFF in _IDENTIFY_SZL:
            ev.op_class = "identify"
    elif group == UD_GROUP_CYCLIC and sub in CYCLIC_SUBSCRIBE and len(payload) >= 4:
        count = ev.detail["item_count"] = int.from_bytes(payload[0:2], "big")
        ev.detail["items"] = _param_items(payload[2:], count, ev)
    elif group == UD_GROUP_PROGRAMMER and sub in _TIS_VARIABLE_JOBS:
        _tis_items(ev, payload, sub != SUB_VARIABLE_STATUS)
    elif group == UD_GROUP_SECURITY:
        ev.detail["password_attempt"] = True      # the (weakly obfuscated) password is never kept
    _remember(state.pending, ev.pair_key, (ev.function_code, ev.function, ev.op_class, ev.targets),
              MAX_PENDING)


def _ud_response(ev: Event, param: bytes, extended: bool, rc: int | None,
                 state: S7State) -> None:
    request = state.pending.pop(ev.pair_key, None)
    error = int.from_bytes(param[10:12], "big") if extended else 0
    ev.result = "ok"
    if error:
        ev.result = "error"
        ev.status = _error_status(error >> 8, error & 0xFF)
    elif rc is not None and rc != RC_SUCCESS:
        ev.result = "error"
        ev.status = f"{RETURN_CODES.get(rc, 'Unknown')} (0x{rc:02x})"
    if request is not None:
        ev.op_class, ev.targets = request[2], list(request[3])
    if ev.function_code >> 8 == UD_GROUP_SECURITY:
        ev.detail["password_accepted"] = ev.result == "ok"


def _ud_contents(ev: Event, ud_type: int, group: int, sub: int, rc: int | None,
                 payload: bytes) -> None:
    """Contents of a whole message (one data unit, or the reassembled answer at its last):
    SZL answers, alarm messages, cyclic values, TIS pushes. A cut structure is flagged and
    what was read before the cut is kept."""
    try:
        if group == UD_GROUP_CPU:
            if sub == SUB_READ_SZL and ev.kind == "response" and ev.result == "ok":
                _szl_response(ev, payload)
            elif sub in ALARM_SUBFUNCTIONS:
                _alarm_message(ev, ud_type, sub, payload)
        elif group == UD_GROUP_CYCLIC:
            if sub in CYCLIC_SUBSCRIBE and ev.kind != "request" and rc == RC_SUCCESS \
                    and len(payload) >= 2:
                count = ev.detail["item_count"] = int.from_bytes(payload[0:2], "big")
                _item_results(ev, [code for code, _, _, _ in _data_items(payload, count, 2)[0]])
        elif group == UD_GROUP_PROGRAMMER and ud_type == UD_PUSH and sub in _TIS_VARIABLE_JOBS:
            _tis_push(ev, sub, payload)
    except (IndexError, ValueError, struct.error):
        ev.anomalies.append("s7comm.truncated_pdu")


def _tis_items(ev: Event, payload: bytes, writes: bool) -> None:
    """TIS request: parameter size, data size, parameters, item count, address items,
    then (Modify variable, Force) one data item per address with the value written."""
    param_size = int.from_bytes(payload[0:2], "big")
    at = 4 + param_size
    count = int.from_bytes(payload[at:at + 2], "big")
    ev.detail["item_count"] = count
    items = []
    at += 2
    for _ in range(count):
        area, rep, db, start = _TIS_ITEM.unpack_from(payload, at)
        at += _TIS_ITEM.size
        if area in (TIS_TIMER, TIS_COUNTER):
            target = Target(kind="area", area="T" if area == TIS_TIMER else "C", start=start,
                            count=2 * rep)
            item = {"area": target.area, "address": start, "length": rep}
        else:
            short = TIS_AREAS.get(area >> 4, f"0x{area:02x}")
            width = _TIS_WIDTH.get(area & 0x0F)
            is_db = short == "DB"
            bit = rep if area & 0x0F == 0 else None
            count_bytes = 1 if bit is not None else (width or 1) * rep
            target = Target(kind="area", area=short, db=db if is_db else None, start=start,
                            count=count_bytes)
            item = {"area": short, "address": start, "length": rep if bit is None else 1}
            if bit is not None:
                item["bit"] = bit
            if is_db:
                item["db"] = db
        item["memory_area"] = area
        if len(items) < MAX_DETAIL_ITEMS:
            items.append(item)
            ev.targets.append(target)
    ev.detail["items"] = items
    if writes:
        ev.detail["values"] = _value_details(_tis_values(payload, at, count)[0])


def _value_details(values: list[tuple]) -> list[dict]:
    return [{"return_code": rc, "transport_size": ts, "length": ln, "value": val}
            for rc, ts, ln, val in values[:MAX_DETAIL_ITEMS]]


def _tis_values(data: bytes, pos: int, count: int) -> tuple[list[tuple], int]:
    """TIS data items (Wireshark's tis_item_value) -> like :func:`_data_items`. Unlike Read
    Var items, only BYTE/WORD/DWORD and INTEGER lengths count bits (rounded down) and every
    odd-length value is padded, the last one too."""
    out = []
    for _ in range(count):
        rc, tsize, length = _ITEM_HEAD.unpack_from(data, pos)
        nbytes = length >> 3 if tsize in _TIS_BIT_LENGTH_SIZES else length
        if rc not in _RC_WITH_DATA:
            nbytes = 0
        if pos + 4 + nbytes > len(data):
            raise IndexError("TIS data item cut")
        out.append((rc, tsize, nbytes, data[pos + 4:pos + 4 + min(nbytes, MAX_VALUE_BYTES)].hex()))
        pos += 4 + nbytes + (nbytes & 1)
    return out, pos


def _tis_push(ev: Event, sub: int, payload: bytes) -> None:
    """Result of a variable-table job: parameter size, data size, parameters, item count,
    then one data item (Variable status: the value read) or one return code byte (Modify
    variable, Force) per address."""
    param_size, data_size = struct.unpack_from(">HH", payload, 0)
    if not data_size:
        return
    at = 4 + param_size
    count = ev.detail["item_count"] = struct.unpack_from(">H", payload, at)[0]
    at += 2
    if sub == SUB_VARIABLE_STATUS:
        codes = [code for code, _, _, _ in _tis_values(payload, at, count)[0]]
    else:
        codes = list(payload[at:at + count])
        if len(codes) < count:
            raise IndexError("TIS return codes cut")
    _item_results(ev, codes)


def _alarm_message(ev: Event, ud_type: int, sub: int, payload: bytes) -> None:
    """Alarm message of the CPU functions group -> ``detail.alarm``. Requests and pushes
    describe message objects (event id, signal and acknowledgement states, associated
    values), responses give a return code per object; ALARM query answers list the alarms
    that are pending."""
    alarm: dict = {}
    ev.detail["alarm"] = alarm             # set first: a cut message keeps what was read
    if sub == SUB_ALARM_QUERY and ud_type == UD_RESPONSE:
        _alarm_query_answer(alarm, payload)
        return
    at = 0
    if sub == SUB_SCAN_IND:
        at = 2
    if sub == SUB_SCAN_IND or sub in _TIMED_ALARMS:
        alarm["timestamp"] = _s7_time(payload, at)
        at += S7_TIMESTAMP_LEN + (2 if sub == SUB_SCAN_IND else 0)
    alarm["function"] = payload[at]
    count = alarm["object_count"] = payload[at + 1]
    at += 2
    objects: list[dict] = []
    alarm["objects"] = objects
    if count > MAX_ALARM_OBJECTS:
        alarm["objects_dropped"] = count - MAX_ALARM_OBJECTS
    if ud_type == UD_RESPONSE:
        codes = list(payload[at:at + min(count, MAX_ALARM_OBJECTS)])
        objects += [{"return_code": code} for code in codes]
        if len(codes) < min(count, MAX_ALARM_OBJECTS):
            raise IndexError("alarm return codes cut")
        _fail_on(ev, codes)
    elif ud_type in (UD_REQUEST, UD_PUSH):
        for _ in range(min(count, MAX_ALARM_OBJECTS)):
            obj: dict = {}
            objects.append(obj)
            at = _alarm_object(payload, at, obj)


def _alarm_object(payload: bytes, at: int, obj: dict) -> int:
    """One message object of a request or push (12 | length | syntax id | ...) into ``obj``;
    returns where the next one starts."""
    spec_len, syntax = payload[at + 1], payload[at + 2]
    obj["syntax_id"] = _SYNTAX_NAMES[syntax]
    at += 3
    if syntax in _EVENT_SYNTAXES:
        nvalues, obj["event_id"] = _EVENT_HEAD.unpack_from(payload, at)
        at += _EVENT_HEAD.size
        if syntax in _SIGNAL_SYNTAXES:
            obj["event_state"], obj["state"] = payload[at], payload[at + 1]
            at += 2
        if syntax in _ACK_SYNTAXES:
            obj["ack_state_going"], obj["ack_state_coming"] = payload[at], payload[at + 1]
            at += 2
        if syntax == SYNTAX_NOTIFY_IND:
            obj["event_going"], obj["event_coming"], obj["event_last_changed"] = \
                payload[at], payload[at + 1], payload[at + 2]
            at += 4
        if syntax in _SIGNAL_SYNTAXES and nvalues:
            obj["value_count"] = nvalues
            values, at = _data_items(payload, nvalues, at)
            obj["value_return_codes"] = [code for code, _, _, _ in values[:MAX_DETAIL_ITEMS]]
    elif syntax == SYNTAX_ALARM_QUERYREQ:
        query, value = struct.unpack_from(">xBxI", payload, at)
        obj["query_type"] = ALARM_QUERY_TYPES.get(query, query)
        if query == QUERY_BY_ALARM_TYPE:
            obj["alarm_type"] = ALARM_TYPES.get(value, value)
        elif query == QUERY_BY_EVENT_ID:
            obj["event_id"] = value
        at += 7
    else:
        at += max(spec_len - 1, 0)
    return at


def _alarm_query_answer(alarm: dict, payload: bytes) -> None:
    """ALARM query answer: function 0, object count, return code, transport size, complete
    length, then 12-byte objects (ALARM_S ones followed by the coming and going times, each
    with one associated value) until the complete length is used up. A continuation unit
    (first byte not 0) has no head: Wireshark reads its first byte as the length left."""
    func = payload[0]
    alarm["function"] = func
    at, rc, remaining = 0, RC_SUCCESS, func
    if func == 0:
        count = alarm["object_count"] = payload[1]
        if not count:
            return
        rc, remaining = payload[2], struct.unpack_from(">H", payload, 4)[0]
        alarm["return_code"] = rc
        at = 6
        if remaining == COMPLETE_LENGTH_UNKNOWN:
            remaining = 0
    if rc != RC_SUCCESS:
        return
    objects: list[dict] = []
    alarm["objects"] = objects
    dropped = 0
    while True:                      # at least one object, as Wireshark reads them
        start = at
        alarm_type, event_id, event_state, going, coming = _QUERY_OBJECT.unpack_from(payload, at)
        at += _QUERY_OBJECT.size
        obj = {"alarm_type": ALARM_TYPES.get(alarm_type, alarm_type), "event_id": event_id,
               "event_state": event_state, "ack_state_going": going, "ack_state_coming": coming}
        if alarm_type == ALARM_TYPE_S:
            obj["timestamp_coming"] = _s7_time(payload, at)
            (coming_value,), at = _data_items(payload, 1, at + S7_TIMESTAMP_LEN)
            obj["timestamp_going"] = _s7_time(payload, at)
            (going_value,), at = _data_items(payload, 1, at + S7_TIMESTAMP_LEN)
            obj["value_return_codes"] = [coming_value[0], going_value[0]]
        if len(objects) < MAX_ALARM_OBJECTS:
            objects.append(obj)
        else:
            dropped += 1
            alarm["objects_dropped"] = dropped
        remaining -= at - start
        if remaining <= 0:
            return


def _s7_time(b: bytes, at: int) -> str:
    """8-byte S7 timestamp (BCD: year, month, day, hour, minute, second, 3 digits of
    milliseconds, weekday) -> ``1994-01-06T00:27:20.397``; not BCD -> its hex."""
    raw = b[at:at + S7_TIMESTAMP_LEN]
    if len(raw) < S7_TIMESTAMP_LEN:
        raise IndexError("S7 timestamp cut")
    digits = raw.hex()
    if not digits[:15].isdigit():
        return digits
    year = int(digits[0:2])
    year += 1900 if year >= 90 else 2000
    return (f"{year}-{digits[2:4]}-{digits[4:6]}T{digits[6:8]}:{digits[8:10]}:"
            f"{digits[10:12]}.{digits[12:15]}")


def _szl_response(ev: Event, payload: bytes) -> None:
    """SZL answer (whole, or reassembled from its data units): id, index, record length and
    count, then identity records. The last data unit answers a follow-up request that names
    no SZL: the answer names it."""
    if len(payload) < 8:
        return
    szl_id, index, rec_len, count = struct.unpack_from(">HHHH", payload, 0)
    ev.detail.update({"szl_id": szl_id, "szl_index": index, "record_count": count})
    part = szl_id & 0xFF
    if not ev.targets:
        ev.targets.append(Target(kind="szl", name=f"0x{szl_id:04x}", start=index))
        if part in _IDENTIFY_SZL:
            ev.op_class = "identify"
    if part not in _IDENTIFY_SZL or rec_len < 2:
        return                              # only these lists carry identity records
    identity: dict[str, str] = {}
    for i in range(min(count, MAX_DETAIL_ITEMS)):
        rec = payload[8 + i * rec_len:8 + (i + 1) * rec_len]
        if len(rec) < rec_len:
            break
        rindex = rec[0] << 8 | rec[1]
        if part == SZL_MODULE_ID and rec_len == SZL_0011_RECORD_LEN:
            if rindex == SZL_0011_ORDER_NUMBER:
                identity["order_number"] = _text(rec[2:22])
            elif rindex == SZL_0011_FIRMWARE and rec[24] == ord("V"):
                identity["firmware"] = f"V{rec[25]}.{rec[26]}.{rec[27]}"
        elif part == SZL_COMPONENT_ID and rindex in SZL_001C_KEYS:
            identity[SZL_001C_KEYS[rindex]] = _text(rec[2:])
    identity = {k: v for k, v in identity.items() if v}
    if identity:
        ev.op_class = "identify"
        ev.identity = {"vendor": "Siemens", **identity}


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()[:MAX_TEXT]


DECODER = Decoder(name="s7comm", ports=(S7_PORT,), probe=probe, frame=frame,
                  new_state=new_state, decode=decode)
