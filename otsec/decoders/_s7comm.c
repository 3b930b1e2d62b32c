/* The C twin of otsec/decoders/s7comm.py decode() (see _cdecode.h for the contract).
 *
 * Covered (everything else returns NotImplemented before touching the state):
 *   TPKT/COTP: malformed TPKT or length indicator, CR/CC (TSAPs, TPDU size, rack/slot),
 *     DR/DC, ER and the other TPDU types; DT with and without end of TSDU (per-direction
 *     reassembly in state.tsdu, its overflow), a TSDU that is neither S7comm nor -plus.
 *   S7comm: truncated header, unknown ROSCTR, length mismatch; Job and Ack/Ack_Data of
 *     every function (Read/Write Var items and data items, Setup communication, block
 *     file names, upload ids, PI-Service, PLC Stop), the pending table and the upload map;
 *     Userdata requests, responses and pushes whose contents are SZL (identity records),
 *     cyclic-services items, or not decoded (block/time functions, security...), and data
 *     units that need no reassembly.
 *   S7comm-plus: every PDU type, requests/responses/notifications (CreateObject,
 *     DeleteObject, SetVariable classification, except the connect-time identity),
 *     continuation fragments.
 *   Left to Python: alarm messages, TIS (programmer variable jobs), multi-unit userdata
 *     reassembly, anything Python would catch as an exception (cut structures), VLQs
 *     longer than 9 bytes, block names with non-ASCII digits.
 *
 * Every decode builds its one event from Python objects first and records the state changes
 * it implies (Commit); they are applied only once the whole message was found covered. The
 * two paths that change the state directly (a DT without end of TSDU, an S7comm-plus
 * continuation fragment) decide coverage before their first change and never decline after.
 * Names, codes and caps are read at init from otsec.decoders.s7comm / s7comm_plus / cotp.
 */
#include "_cdecode.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef unsigned char u8;

#define COVERED 0
#define NOT_COVERED 1
#define FAILED (-1)
/* run a step returning COVERED / NOT_COVERED / FAILED; stop at anything but COVERED */
#define STEP(x) do { int r_ = (x); if (r_ != COVERED) return r_; } while (0)

static inline unsigned be16(const u8 *b) { return (unsigned)b[0] << 8 | b[1]; }
static inline unsigned long be32(const u8 *b)
{
    return (unsigned long)b[0] << 24 | (unsigned long)b[1] << 16 | (unsigned long)b[2] << 8 | b[3];
}

/* ------------------------------------------------------------------ tables read at init */

static PyObject *TsduCls, *PendingPduCls;
/* otsec.decoders.s7comm */
static PyObject *JOB_FUNCTIONS, *ERROR_CLASS_NAMES, *ERROR_CODE_NAMES, *RETURN_CODES, *ROSCTR_NAMES;
static PyObject *SYNTAX_NAMES, *AREA_INFO, *SIZE_INFO, *RC_NAMES, *UD_TYPE_NAMES, *UD_GROUP_NAMES;
static PyObject *UD_GROUPS, *UD_SUBFUNCTIONS, *UD_KIND, *MODE_NAMES, *BLOCK_TYPES, *FILESYSTEMS;
static PyObject *PI_SERVICE_OPS, *SZL_001C_KEYS;
/* otsec.decoders.cotp */
static PyObject *COTP_TYPE_NAMES, *TSAP_CONNECTION_TYPES;
/* otsec.decoders.s7comm_plus */
static PyObject *PLUS_FUNCTIONS, *PDU_TYPE_NAMES, *OPCODE_NAMES, *OPCODE_KIND, *CPU_STATE_NAMES, *CLASS_OP;

static long S7_ID, ROSCTR_JOB, ROSCTR_USERDATA;
static long F_READ_VAR, F_WRITE_VAR, F_UPLOAD, F_END_UPLOAD, F_START_UPLOAD, F_PI_SERVICE;
static long F_PLC_STOP, F_SETUP_COMM, SYNTAX_S7ANY, SYNTAX_DBREAD, ITEM_VAR_SPEC, RC_SUCCESS;
static long UD_GROUP_CPU, UD_GROUP_SECURITY, UD_GROUP_MODE_TRANSITION, UD_GROUP_PROGRAMMER;
static long UD_GROUP_CYCLIC, SUB_READ_SZL, UD_PUSH, UD_METHOD_EXTENDED, UD_EXTENDED_PARAM_LEN;
static long SZL_MODULE_ID, SZL_COMPONENT_ID, SZL_0011_RECORD_LEN, SZL_0011_ORDER_NUMBER, SZL_0011_FIRMWARE;
static long MAX_TSDU_BYTES, MAX_TSDU_FRAGMENTS, MAX_DETAIL_ITEMS, MAX_VALUE_BYTES, MAX_PENDING;
static long MAX_UPLOADS, MAX_TEXT;
static long TPKT_VERSION, TPKT_MIN_LEN, TPKT_HEADER_LEN, COTP_CR, COTP_CC, COTP_DR, COTP_DC, COTP_DT, COTP_ER;
static long DT_EOT, PARAM_TPDU_SIZE, PARAM_SRC_TSAP, PARAM_DST_TSAP;
static long PLUS_ID, PLUS_HEADER_LEN, PDU_CONNECT, PDU_DATA_FW15, PDU_SYSTEM, PDU_KEEPALIVE;
static long OP_NOTIFICATION, F_CREATE_OBJECT, F_DELETE_OBJECT, F_SET_VARIABLE;
static long OBJECT_NULL_SERVER_SESSION, OBJECT_CPU_EXEC_UNIT, ATTR_OPERATING_STATE_REQ;
static long ITEM_START_OBJECT, MAX_CONTINUATION_FRAGMENTS, MAX_TRACKED_OBJECTS, MAX_PENDING_CREATES;

/* byte-indexed membership tables built from the Python frozensets */
static u8 HEADER_LEN[256], NUMBERED_AREA[256], BIT_LENGTH_SIZE[256], RC_WITH_DATA[256];
static u8 FILENAME_FUNCTION[256], IDENTIFY_SZL[256], CYCLIC_SUBSCRIBE[256], TIS_JOB[256];
static u8 ALARM_SUB[256], OWN_FRAGMENT_GROUP[256], FRAMED_TYPE[256];

/* interned strings: detail keys, fixed values */
#define STRINGS(X) \
    X(s_cotp, "cotp") X(s_s7comm, "s7comm") X(s_plus, "s7comm-plus") X(s_s7comm_ud, "s7comm-ud") \
    X(s_request, "request") X(s_response, "response") X(s_notification, "notification") \
    X(s_session, "session") X(s_other, "other") X(s_identify, "identify") X(s_ok, "ok") \
    X(s_error, "error") X(s_area, "area") X(s_block, "block") X(s_pi_service, "pi_service") \
    X(s_szl, "szl") X(s_object, "object") X(s_variable, "variable") X(s_DB, "DB") \
    X(s_connect, "connect") X(s_unknown, "unknown") X(s_Unknown, "Unknown") \
    X(s_tsdu, "tsdu") X(s_pending, "pending") X(s_uploads, "uploads") X(s_data_units, "data_units") \
    X(s_plus_attr, "plus") X(s_parts, "parts") X(s_size, "size") X(s_event, "event") \
    X(s_continuations, "continuations") X(s_session_id, "session_id") X(s_creates, "creates") \
    X(s_objects, "objects") X(s_detail, "detail") X(s_anomalies, "anomalies") \
    X(s_rosctr, "rosctr") X(s_rosctr_name, "rosctr_name") X(s_pdu_ref, "pdu_ref") \
    X(s_param_length, "param_length") X(s_data_length, "data_length") \
    X(s_max_amq_calling, "max_amq_calling") X(s_max_amq_called, "max_amq_called") \
    X(s_pdu_length, "pdu_length") X(s_item_count, "item_count") X(s_items, "items") \
    X(s_values, "values") X(s_syntax_id, "syntax_id") X(s_area_name, "area_name") \
    X(s_transport_size, "transport_size") X(s_length, "length") X(s_address, "address") \
    X(s_bit, "bit") X(s_db, "db") X(s_areas, "areas") X(s_return_code, "return_code") \
    X(s_value, "value") X(s_filename, "filename") X(s_block_type, "block_type") \
    X(s_block_number, "block_number") X(s_filesystem, "filesystem") X(s_upload_id, "upload_id") \
    X(s_arguments, "arguments") X(s_error_class, "error_class") X(s_error_code, "error_code") \
    X(s_item_return_codes, "item_return_codes") X(s_type, "type") X(s_funcgroup, "funcgroup") \
    X(s_group_name, "group_name") X(s_sequence, "sequence") X(s_mode, "mode") \
    X(s_subfunc, "subfunc") X(s_data_unit_ref, "data_unit_ref") \
    X(s_last_data_unit, "last_data_unit") X(s_szl_id, "szl_id") X(s_szl_index, "szl_index") \
    X(s_record_count, "record_count") X(s_password_attempt, "password_attempt") \
    X(s_password_accepted, "password_accepted") X(s_vendor, "vendor") X(s_Siemens, "Siemens") \
    X(s_order_number, "order_number") X(s_firmware, "firmware") X(s_strip, "strip") \
    X(s_reason, "reason") X(s_dst_ref, "dst_ref") X(s_src_ref, "src_ref") X(s_class, "class") \
    X(s_tpdu_size, "tpdu_size") X(s_src_tsap, "src_tsap") X(s_dst_tsap, "dst_tsap") \
    X(s_rack, "rack") X(s_slot, "slot") X(s_hex, "hex") X(s_text, "text") \
    X(s_connection_type, "connection_type") X(s_first_byte, "first_byte") \
    X(s_pdu_type, "pdu_type") X(s_pdu_type_name, "pdu_type_name") X(s_opcode, "opcode") \
    X(s_opcode_name, "opcode_name") X(s_integrity, "integrity") X(s_return_value, "return_value") \
    X(s_cpu_state_request, "cpu_state_request") \
    X(s_continuation_fragments, "continuation_fragments") \
    X(s_malformed, "Malformed TPDU") X(s_truncated, "Truncated PDU") X(s_Data, "Data") \
    X(s_Ack, "Ack") X(s_keep_alive, "Keep Alive") X(s_system_pdu, "System PDU") \
    X(s_notification_fn, "Notification") X(s_read, "read") X(s_control, "control") \
    X(s_program, "program") X(s_diagnostic, "diagnostic") X(s_INSE, "_INSE") X(s_DELE, "_DELE") X(s_N_F, "_N_F_") \
    X(a_invalid_tpkt, "cotp.invalid_tpkt_length") X(a_invalid_li, "cotp.invalid_length_indicator") \
    X(a_overflow, "cotp.reassembly_overflow") X(a_unknown_payload, "cotp.unknown_payload") \
    X(a_tpdu_error, "cotp.tpdu_error") X(a_unexpected_tpdu, "cotp.unexpected_tpdu") \
    X(a_unknown_tpdu, "cotp.unknown_tpdu") X(a_missing_tsap, "cotp.missing_tsap") \
    X(a_s7_truncated, "s7comm.truncated_pdu") X(a_unknown_rosctr, "s7comm.unknown_rosctr") \
    X(a_length_mismatch, "s7comm.length_mismatch") X(a_unknown_function, "s7comm.unknown_function") \
    X(a_unknown_item_spec, "s7comm.unknown_item_spec") \
    X(a_invalid_block_filename, "s7comm.invalid_block_filename") \
    X(a_plus_truncated, "s7comm-plus.truncated_pdu") X(a_plus_unknown_type, "s7comm-plus.unknown_pdu_type") \
    X(a_plus_unknown_opcode, "s7comm-plus.unknown_opcode") \
    X(a_plus_unknown_function, "s7comm-plus.unknown_function") \
    X(a_plus_too_many, "s7comm-plus.too_many_fragments")

#define DECLARE(var, text) static PyObject *var;
STRINGS(DECLARE)
#undef DECLARE

/* ------------------------------------------------------------------ small helpers */

/* d[key] = v, stealing v (NULL v: an error already set) */
static int
dset(PyObject *d, PyObject *key, PyObject *v)
{
    if (v == NULL)
        return FAILED;
    int r = PyDict_SetItem(d, key, v);
    Py_DECREF(v);
    return r < 0 ? FAILED : COVERED;
}

static int
dset_long(PyObject *d, PyObject *key, long v)
{
    return dset(d, key, PyLong_FromLong(v));
}

static int
lappend(PyObject *l, PyObject *v)
{
    if (v == NULL)
        return FAILED;
    int r = PyList_Append(l, v);
    Py_DECREF(v);
    return r < 0 ? FAILED : COVERED;
}

static PyObject *
fmt(const char *format, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, format);
    vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    return PyUnicode_FromString(buf);
}

static PyObject *
latin1(const u8 *b, Py_ssize_t n)
{
    return PyUnicode_DecodeLatin1((const char *)b, n < 0 ? 0 : n, NULL);
}

/* borrowed table.get(key, fallback) for an int key */
static PyObject *
get_int(PyObject *table, long key, PyObject *fallback)
{
    PyObject *k = PyLong_FromLong(key);
    if (k == NULL)
        return NULL;
    PyObject *v = PyDict_GetItemWithError(table, k);
    Py_DECREF(k);
    if (v == NULL && !PyErr_Occurred())
        return fallback;
    return v;
}

/* table.pop(next(iter(table))) when key is new and the table is full; then table[key] = v */
static int
remember(PyObject *table, PyObject *key, PyObject *v, long cap)
{
    int has = PyDict_Contains(table, key);
    if (has < 0)
        return FAILED;
    if (!has && PyDict_GET_SIZE(table) >= cap && otsec_drop_oldest(table) < 0)
        return FAILED;
    return PyDict_SetItem(table, key, v) < 0 ? FAILED : COVERED;
}

/* the state attribute `name`, which must be a dict (else: not covered) */
static int
state_dict(PyObject *state, PyObject *name, PyObject **out)
{
    PyObject *d = PyObject_GetAttr(state, name);
    if (d == NULL)
        return FAILED;
    if (!PyDict_CheckExact(d)) {
        Py_DECREF(d);
        return NOT_COVERED;
    }
    *out = d;
    return COVERED;
}

static PyObject *
target(PyObject *kind, PyObject *start, PyObject *count, PyObject *area, PyObject *db, PyObject *name)
{
    PyObject *args[6] = {kind, start ? start : Py_None, count ? count : Py_None,
                         area ? area : Py_None, db ? db : Py_None, name ? name : Py_None};
    return otsec_target_new(args, 6);
}

/* ------------------------------------------------------------------ the event being built */

typedef struct {
    PyObject *protocol, *kind, *function, *op_class, *function_code, *targets, *result;
    PyObject *status, *anomalies, *detail, *identity, *pair_key;
} Ev;

#define EV_FIELDS(X) X(protocol) X(kind) X(function) X(op_class) X(function_code) X(targets) \
    X(result) X(status) X(anomalies) X(detail) X(identity) X(pair_key)

static void
ev_clear(Ev *ev)
{
#define CLEAR(f) Py_CLEAR(ev->f);
    EV_FIELDS(CLEAR)
#undef CLEAR
}

/* a fresh event: protocol, kind, function, op_class given (borrowed), lists and detail empty */
static int
ev_init(Ev *ev, PyObject *protocol, PyObject *kind, PyObject *function, PyObject *op_class)
{
    memset(ev, 0, sizeof *ev);
    Py_INCREF(protocol); ev->protocol = protocol;
    Py_INCREF(kind); ev->kind = kind;
    Py_XINCREF(function); ev->function = function;
    Py_INCREF(op_class); ev->op_class = op_class;
    ev->targets = PyList_New(0);
    ev->anomalies = PyList_New(0);
    ev->detail = PyDict_New();
    if (ev->targets == NULL || ev->anomalies == NULL || ev->detail == NULL) {
        ev_clear(ev);
        return FAILED;
    }
    return COVERED;
}

/* replace a field with a new reference (stolen); NULL v: an error */
static int
ev_put(PyObject **field, PyObject *v)
{
    if (v == NULL)
        return FAILED;
    Py_XSETREF(*field, v);
    return COVERED;
}

/* replace a field with a borrowed reference */
static int
ev_set(PyObject **field, PyObject *v)
{
    Py_INCREF(v);
    Py_XSETREF(*field, v);
    return COVERED;
}

static int
ev_flag(Ev *ev, PyObject *anomaly)
{
    return PyList_Append(ev->anomalies, anomaly) < 0 ? FAILED : COVERED;
}

/* the Event object (new reference), the fields moved into it */
static PyObject *
ev_build(Ev *ev)
{
    PyObject *args[12];
    int i = 0;
#define ARG(f) args[i++] = ev->f ? ev->f : Py_None;
    EV_FIELDS(ARG)
#undef ARG
    PyObject *out = otsec_event_new(args, 12);
    ev_clear(ev);
    return out;
}

/* [event] from a built Ev (cleared either way) */
static PyObject *
ev_list(Ev *ev)
{
    return otsec_one_event(ev_build(ev));
}

/* ------------------------------------------------------------------ state changes to apply */

typedef struct {
    PyObject *tsdu_del;                 /* delete state.tsdu[from_client] (borrowed bool) */
    PyObject *pend_pop;                 /* pop from state.pending */
    PyObject *pend_key, *pend_val;      /* remember in state.pending */
    PyObject *upl_key, *upl_val;        /* remember in state.uploads */
    /* S7comm-plus */
    PyObject *creates_pop, *creates_key, *creates_val, *objects_pop, *objects_key, *objects_val;
    PyObject *session_id;
    PyObject *plus_hold;                /* event held as st.pending[from_client] */
} Commit;

static void
commit_clear(Commit *c)
{
    Py_CLEAR(c->pend_pop); Py_CLEAR(c->pend_key); Py_CLEAR(c->pend_val);
    Py_CLEAR(c->upl_key); Py_CLEAR(c->upl_val);
    Py_CLEAR(c->creates_pop); Py_CLEAR(c->creates_key); Py_CLEAR(c->creates_val);
    Py_CLEAR(c->objects_pop); Py_CLEAR(c->objects_key); Py_CLEAR(c->objects_val);
    Py_CLEAR(c->session_id); Py_CLEAR(c->plus_hold);
}

static int
pop_key(PyObject *state, PyObject *name, PyObject *key)
{
    PyObject *d = PyObject_GetAttr(state, name);
    if (d == NULL)
        return FAILED;
    int has = PyDict_Contains(d, key);
    int r = has < 0 || (has && PyDict_DelItem(d, key) < 0) ? FAILED : COVERED;
    Py_DECREF(d);
    return r;
}

static int
remember_in(PyObject *state, PyObject *name, PyObject *key, PyObject *v, long cap)
{
    PyObject *d = PyObject_GetAttr(state, name);
    if (d == NULL)
        return FAILED;
    int r = remember(d, key, v, cap);
    Py_DECREF(d);
    return r;
}

static int
commit_apply(Commit *c, PyObject *state, PyObject *fc)
{
    if (c->tsdu_del && pop_key(state, s_tsdu, fc) < 0)
        return FAILED;
    if (c->pend_pop && pop_key(state, s_pending, c->pend_pop) < 0)
        return FAILED;
    if (c->pend_key && remember_in(state, s_pending, c->pend_key, c->pend_val, MAX_PENDING) < 0)
        return FAILED;
    if (c->upl_key && remember_in(state, s_uploads, c->upl_key, c->upl_val, MAX_UPLOADS) < 0)
        return FAILED;
    if (!(c->creates_pop || c->creates_key || c->objects_pop || c->objects_key || c->session_id
          || c->plus_hold))
        return COVERED;
    PyObject *st = PyObject_GetAttr(state, s_plus_attr);
    if (st == NULL)
        return FAILED;
    int r = COVERED;
    if (c->creates_pop && pop_key(st, s_creates, c->creates_pop) < 0)
        r = FAILED;
    else if (c->creates_key
             && remember_in(st, s_creates, c->creates_key, c->creates_val, MAX_PENDING_CREATES) < 0)
        r = FAILED;
    else if (c->objects_pop && pop_key(st, s_objects, c->objects_pop) < 0)
        r = FAILED;
    else if (c->objects_key
             && remember_in(st, s_objects, c->objects_key, c->objects_val, MAX_TRACKED_OBJECTS) < 0)
        r = FAILED;
    else if (c->session_id && PyObject_SetAttr(st, s_session_id, c->session_id) < 0)
        r = FAILED;
    else if (c->plus_hold) {
        PyObject *d = PyObject_GetAttr(st, s_pending);
        if (d == NULL || PyDict_SetItem(d, fc, c->plus_hold) < 0)
            r = FAILED;
        Py_XDECREF(d);
    }
    Py_DECREF(st);
    return r;
}

/* ------------------------------------------------------------------ S7comm items */

typedef struct {
    int kept;                /* codes kept for detail (at most MAX_DETAIL_ITEMS) */
    u8 code[256];
    long failed;             /* codes other than Success */
    int first_failed;
} Codes;

static void
codes_add(Codes *c, int rc)
{
    if (c->kept < MAX_DETAIL_ITEMS && c->kept < 256)
        c->code[c->kept++] = (u8)rc;
    if (rc != RC_SUCCESS && c->failed++ == 0)
        c->first_failed = rc;
}

/* Python's _fail_on: any code but Success makes the result an error, the first one named */
static int
fail_on(Ev *ev, const Codes *c)
{
    if (!c->failed)
        return COVERED;
    PyObject *name = get_int(RETURN_CODES, c->first_failed, s_Unknown);
    if (name == NULL)
        return FAILED;
    char num[16];
    snprintf(num, sizeof num, "0x%02x", c->first_failed);
    PyObject *status = c->failed == 1 ? PyUnicode_FromFormat("%U (%s)", name, num)
                                      : PyUnicode_FromFormat("%U (%s) and %ld more", name, num,
                                                             c->failed - 1);
    ev_set(&ev->result, s_error);
    return ev_put(&ev->status, status);
}

static int
item_results(Ev *ev, const Codes *c)
{
    PyObject *names = PyList_New(c->kept);
    if (names == NULL)
        return FAILED;
    for (int i = 0; i < c->kept; i++) {
        PyObject *n = PyTuple_GET_ITEM(RC_NAMES, c->code[i]);
        Py_INCREF(n);
        PyList_SET_ITEM(names, i, n);
    }
    STEP(dset(ev->detail, s_item_return_codes, names));
    return fail_on(ev, c);
}

/* Python's _data_items from pos: codes into `codes`, value dicts of the first items into
 * `values` (when not NULL); *end = position after them. A cut item: not covered. */
static int
data_items(const u8 *d, Py_ssize_t n, long count, Py_ssize_t pos, Codes *codes,
           PyObject *values, Py_ssize_t *end)
{
    for (long i = 0; i < count; i++) {
        if (pos + 4 > n)
            return NOT_COVERED;
        int rc = d[pos], tsize = d[pos + 1];
        long length = be16(d + pos + 2);
        long nbytes = BIT_LENGTH_SIZE[tsize] ? (length + 7) / 8 : length;
        if (!RC_WITH_DATA[rc])
            nbytes = 0;
        if (pos + 4 + nbytes > n)
            return NOT_COVERED;
        if (codes)
            codes_add(codes, rc);
        if (values && PyList_GET_SIZE(values) < MAX_DETAIL_ITEMS) {
            char hex[2 * 256 + 1];
            long shown = nbytes < MAX_VALUE_BYTES ? nbytes : MAX_VALUE_BYTES;
            if (shown > 256)
                shown = 256;
            for (long k = 0; k < shown; k++)
                snprintf(hex + 2 * k, 3, "%02x", d[pos + 4 + k]);
            hex[2 * shown] = 0;
            PyObject *item = PyDict_New();
            if (item == NULL || lappend(values, item) < 0)
                return FAILED;
            STEP(dset_long(item, s_return_code, rc));
            STEP(dset_long(item, s_transport_size, tsize));
            STEP(dset_long(item, s_length, nbytes));
            STEP(dset(item, s_value, PyUnicode_FromStringAndSize(hex, 2 * shown)));
        }
        pos += 4 + nbytes + ((i < count - 1) ? (nbytes & 1) : 0);
    }
    if (end)
        *end = pos;
    return COVERED;
}

static int
add_target(Ev *ev, PyObject *t)
{
    return lappend(ev->targets, t);
}

static int
s7any_item(Ev *ev, const u8 *a, PyObject *item)
{
    int tsize = a[0], area = a[5];
    long length = be16(a + 1), db = be16(a + 3);
    long address = (long)a[6] << 16 | be16(a + 7);
    PyObject *ainfo = PyTuple_GET_ITEM(AREA_INFO, area), *sinfo = PyTuple_GET_ITEM(SIZE_INFO, tsize);
    PyObject *shortname = PyTuple_GET_ITEM(ainfo, 0), *unit = PyTuple_GET_ITEM(sinfo, 1);
    long start, bit = -1, count;
    if (NUMBERED_AREA[area]) {
        start = address;
        count = length;
    } else {
        start = address >> 3;
        bit = address & 7;
        long u = unit == Py_None ? 0 : PyLong_AsLong(unit);
        count = u ? length * u : (bit + length + 7) / 8;
    }
    STEP(dset(item, s_area, Py_NewRef(shortname)));
    STEP(dset(item, s_area_name, Py_NewRef(PyTuple_GET_ITEM(ainfo, 1))));
    STEP(dset(item, s_transport_size, Py_NewRef(PyTuple_GET_ITEM(sinfo, 0))));
    STEP(dset_long(item, s_length, length));
    STEP(dset_long(item, s_address, start));
    if (bit >= 0)
        STEP(dset_long(item, s_bit, bit));
    PyObject *dbo = NULL;
    if (area == 0x84 || area == 0x85) {
        dbo = PyLong_FromLong(db);
        if (dbo == NULL)
            return FAILED;
        if (PyDict_SetItem(item, s_db, dbo) < 0) {
            Py_DECREF(dbo);
            return FAILED;
        }
    }
    int r = COVERED;
    if (PyList_GET_SIZE(ev->targets) < MAX_DETAIL_ITEMS) {
        PyObject *so = PyLong_FromLong(start), *co = PyLong_FromLong(count);
        r = (so && co) ? add_target(ev, target(s_area, so, co, shortname, dbo, NULL)) : FAILED;
        Py_XDECREF(so);
        Py_XDECREF(co);
    }
    Py_XDECREF(dbo);
    return r;
}

/* Python's _param_items on p[0:n] (items from offset 2) -> *out list of item dicts */
static int
param_items(Ev *ev, const u8 *p, Py_ssize_t n, long count, PyObject **out)
{
    PyObject *items = PyList_New(0);
    if (items == NULL)
        return FAILED;
    *out = items;
    Py_ssize_t pos = 2;
    for (long i = 0; i < count; i++) {
        if (pos + 1 >= n)
            return NOT_COVERED;
        int spec = p[pos], ilen = p[pos + 1];
        Py_ssize_t end = pos + 2 + ilen;
        if (ilen < 1 || end > n)
            return NOT_COVERED;
        int syntax = p[pos + 2];
        PyObject *item = PyDict_New();
        if (item == NULL)
            return FAILED;
        int r = dset(item, s_syntax_id, Py_NewRef(PyTuple_GET_ITEM(SYNTAX_NAMES, syntax)));
        if (r == COVERED && spec != ITEM_VAR_SPEC)
            r = ev_flag(ev, a_unknown_item_spec);
        if (r == COVERED && syntax == SYNTAX_S7ANY && ilen >= 10)
            r = s7any_item(ev, p + pos + 3, item);
        else if (r == COVERED && syntax == SYNTAX_DBREAD && ilen >= 2) {
            Py_ssize_t at = pos + 3;
            int areas = p[at];
            r = dset_long(item, s_areas, areas);
            at += 1;
            for (int k = 0; r == COVERED && k < areas; k++) {
                if (at + 5 > end) {
                    r = NOT_COVERED;
                    break;
                }
                if (PyList_GET_SIZE(ev->targets) < MAX_DETAIL_ITEMS) {
                    PyObject *so = PyLong_FromLong(be16(p + at + 3));
                    PyObject *co = PyLong_FromLong(p[at]);
                    PyObject *dbo = PyLong_FromLong(be16(p + at + 1));
                    r = (so && co && dbo) ? add_target(ev, target(s_area, so, co, s_DB, dbo, NULL))
                                          : FAILED;
                    Py_XDECREF(so); Py_XDECREF(co); Py_XDECREF(dbo);
                }
                at += 5;
            }
        }
        if (r == COVERED && PyList_GET_SIZE(items) < MAX_DETAIL_ITEMS)
            r = PyList_Append(items, item) < 0 ? FAILED : COVERED;
        Py_DECREF(item);
        if (r != COVERED)
            return r;
        pos = end;
    }
    return COVERED;
}

/* Python's _block_target: "_0A00001P" -> Target(block, "DB1"), the parts in detail */
static int
block_target(Ev *ev, const u8 *name, Py_ssize_t n)
{
    Py_ssize_t shown = n < MAX_TEXT ? n : MAX_TEXT;
    STEP(dset(ev->detail, s_filename, latin1(name, shown)));
    PyObject *btype = NULL;
    if (n >= 3 && name[1] < 0x80 && name[2] < 0x80) {
        char t[3] = {(char)name[1], (char)name[2], 0};
        for (int i = 0; i < 2; i++)
            if (t[i] >= 'a' && t[i] <= 'z')
                t[i] = (char)(t[i] - 32);
        PyObject *k = PyUnicode_FromString(t);
        if (k == NULL)
            return FAILED;
        btype = PyDict_GetItemWithError(BLOCK_TYPES, k);
        Py_DECREF(k);
        if (btype == NULL && PyErr_Occurred())
            return FAILED;
    }
    int digits = n >= 8;
    long number = 0;
    for (Py_ssize_t i = 3; i < 8 && i < n; i++) {
        if (name[i] >= 0x80)
            return NOT_COVERED;     /* str.isdigit() accepts some latin-1 digits, int() not */
        if (name[i] < '0' || name[i] > '9')
            digits = 0;
        else
            number = number * 10 + (name[i] - '0');
    }
    if (n < 8 || btype == NULL || !digits) {
        STEP(ev_flag(ev, a_invalid_block_filename));
        return add_target(ev, target(s_block, NULL, NULL, NULL, NULL,
                                     PyDict_GetItem(ev->detail, s_filename)));
    }
    STEP(dset(ev->detail, s_block_type, Py_NewRef(btype)));
    STEP(dset_long(ev->detail, s_block_number, number));
    if (n > 8) {
        PyObject *c = latin1(name + 8, 1);
        if (c == NULL)
            return FAILED;
        PyObject *fs = PyDict_GetItemWithError(FILESYSTEMS, c);
        if (fs == NULL && PyErr_Occurred()) {
            Py_DECREF(c);
            return FAILED;
        }
        int r = dset(ev->detail, s_filesystem, Py_NewRef(fs ? fs : c));
        Py_DECREF(c);
        STEP(r);
    }
    PyObject *tname = PyUnicode_FromFormat("%U%ld", btype, number);
    if (tname == NULL)
        return FAILED;
    int r = add_target(ev, target(s_block, NULL, NULL, NULL, NULL, tname));
    Py_DECREF(tname);
    return r;
}

/* PI-Service: service name, its argument block, blocks of _INSE/_DELE */
static int
decode_pi(Ev *ev, const u8 *p, Py_ssize_t n)
{
    Py_ssize_t blen = 0, k;
    for (k = 8; k < 10 && k < n; k++)
        blen = blen << 8 | p[k];
    Py_ssize_t bstart = n < 10 ? n : 10;
    Py_ssize_t bend = 10 + blen < n ? 10 + blen : n;
    Py_ssize_t bsize = bend > bstart ? bend - bstart : 0;
    const u8 *block = p + bstart;
    Py_ssize_t at = 10 + blen;
    if (at >= n)
        return NOT_COVERED;
    Py_ssize_t send = at + 1 + p[at] < n ? at + 1 + p[at] : n;
    PyObject *service = latin1(p + at + 1, send - (at + 1));
    if (service == NULL)
        return FAILED;
    int r = PyDict_SetItem(ev->detail, s_pi_service, service) < 0 ? FAILED : COVERED;
    PyObject *op = r == COVERED ? PyDict_GetItemWithError(PI_SERVICE_OPS, service) : NULL;
    if (r == COVERED && op == NULL) {
        if (PyErr_Occurred())
            r = FAILED;
        else {
            int pre = PyUnicode_Tailmatch(service, s_N_F, 0, PY_SSIZE_T_MAX, -1);
            op = pre > 0 ? s_program : s_control;
            r = pre < 0 ? FAILED : COVERED;
        }
    }
    if (r == COVERED)
        r = ev_set(&ev->op_class, op);
    if (r == COVERED)
        r = add_target(ev, target(s_pi_service, NULL, NULL, NULL, NULL, service));
    int blocks = r == COVERED && bsize >= 2
                 && (PyUnicode_Compare(service, s_INSE) == 0 || PyUnicode_Compare(service, s_DELE) == 0);
    Py_DECREF(service);
    STEP(r);
    if (blocks) {
        int count = block[0] < MAX_DETAIL_ITEMS ? block[0] : (int)MAX_DETAIL_ITEMS;
        for (int i = 0; i < count; i++) {
            u8 name[9] = {'_'};
            Py_ssize_t from = 2 + 8 * i, to = 10 + 8 * i;
            if (to > bsize)
                to = bsize;
            Py_ssize_t len = to > from ? to - from : 0;
            memcpy(name + 1, block + from, (size_t)len);
            STEP(block_target(ev, name, len + 1));
        }
    } else if (bsize) {
        STEP(dset(ev->detail, s_arguments, latin1(block, bsize < MAX_TEXT ? bsize : MAX_TEXT)));
    }
    return COVERED;
}

/* ------------------------------------------------------------------ S7comm PDU */

static int
setup_detail(Ev *ev, const u8 *p, Py_ssize_t n)
{
    if (n < 8)
        return NOT_COVERED;
    STEP(dset_long(ev->detail, s_max_amq_calling, be16(p + 2)));
    STEP(dset_long(ev->detail, s_max_amq_called, be16(p + 4)));
    return dset_long(ev->detail, s_pdu_length, be16(p + 6));
}

/* the upload id of param[4:8] (slices clamp, as in Python) */
static unsigned long
upload_id(const u8 *p, Py_ssize_t n)
{
    unsigned long v = 0;
    for (Py_ssize_t i = 4; i < 8 && i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static int
decode_job(Ev *ev, const u8 *p, Py_ssize_t pn, const u8 *d, Py_ssize_t dn, PyObject *state,
           Commit *c)
{
    if (pn < 1)
        return NOT_COVERED;
    int func = p[0];
    ev_set(&ev->kind, s_request);
    STEP(ev_put(&ev->function_code, PyLong_FromLong(func)));
    PyObject *known = get_int(JOB_FUNCTIONS, func, NULL);
    if (known == NULL) {
        if (PyErr_Occurred())
            return FAILED;
        STEP(ev_put(&ev->function, fmt("Unknown function 0x%02x", func)));
        ev_set(&ev->op_class, s_other);
        STEP(ev_flag(ev, a_unknown_function));
    } else {
        ev_set(&ev->function, PyTuple_GET_ITEM(known, 0));
        ev_set(&ev->op_class, PyTuple_GET_ITEM(known, 1));
    }
    if (func == F_SETUP_COMM) {
        STEP(setup_detail(ev, p, pn));
    } else if (func == F_READ_VAR || func == F_WRITE_VAR) {
        if (pn < 2)
            return NOT_COVERED;
        long count = p[1];
        STEP(dset_long(ev->detail, s_item_count, count));
        PyObject *items = NULL;
        int r = param_items(ev, p, pn, count, &items);
        if (r == COVERED)
            r = PyDict_SetItem(ev->detail, s_items, items) < 0 ? FAILED : COVERED;
        Py_XDECREF(items);
        STEP(r);
        if (func == F_WRITE_VAR) {
            PyObject *values = PyList_New(0);
            if (values == NULL)
                return FAILED;
            r = data_items(d, dn, count, 0, NULL, values, NULL);
            if (r == COVERED)
                r = PyDict_SetItem(ev->detail, s_values, values) < 0 ? FAILED : COVERED;
            Py_DECREF(values);
            STEP(r);
        }
    } else if (FILENAME_FUNCTION[func]) {
        if (pn < 9)
            return NOT_COVERED;
        Py_ssize_t end = 9 + p[8] < pn ? 9 + p[8] : pn;
        STEP(block_target(ev, p + 9, end - 9));
    } else if (func == F_UPLOAD || func == F_END_UPLOAD) {
        PyObject *id = PyLong_FromUnsignedLong(upload_id(p, pn));
        if (id == NULL)
            return FAILED;
        int r = PyDict_SetItem(ev->detail, s_upload_id, id) < 0 ? FAILED : COVERED;
        PyObject *uploads = NULL;
        if (r == COVERED)
            r = state_dict(state, s_uploads, &uploads);
        if (r == COVERED) {
            PyObject *t = PyDict_GetItemWithError(uploads, id);
            if (t != NULL)
                r = PyList_Append(ev->targets, t) < 0 ? FAILED : COVERED;
            else if (PyErr_Occurred())
                r = FAILED;
        }
        Py_XDECREF(uploads);
        Py_DECREF(id);
        STEP(r);
    } else if (func == F_PI_SERVICE) {
        STEP(decode_pi(ev, p, pn));
    } else if (func == F_PLC_STOP) {
        if (pn < 7)
            return NOT_COVERED;
        Py_ssize_t end = 7 + p[6] < pn ? 7 + p[6] : pn;
        PyObject *service = latin1(p + 7, end - 7);
        if (service == NULL)
            return FAILED;
        int r = add_target(ev, target(s_pi_service, NULL, NULL, NULL, NULL, service));
        if (r == COVERED)
            r = PyDict_SetItem(ev->detail, s_pi_service, service) < 0 ? FAILED : COVERED;
        Py_DECREF(service);
        STEP(r);
    }
    c->pend_key = Py_NewRef(ev->pair_key);
    c->pend_val = PyTuple_Pack(4, ev->function_code, ev->function, ev->op_class, ev->targets);
    return c->pend_val ? COVERED : FAILED;
}

static PyObject *
error_status(int err_class, int err_code)
{
    PyObject *cls = get_int(ERROR_CLASS_NAMES, err_class, NULL);
    if (cls == NULL && PyErr_Occurred())
        return NULL;
    PyObject *code = get_int(ERROR_CODE_NAMES, err_class << 8 | err_code, NULL);
    if (code == NULL && PyErr_Occurred())
        return NULL;
    char a[8], b[8];
    snprintf(a, sizeof a, "%02x", err_class);
    snprintf(b, sizeof b, "%04x", err_class << 8 | err_code);
    if (cls == NULL)
        cls = PyUnicode_FromString("Unknown error class");
    else
        Py_INCREF(cls);
    if (code == NULL)
        code = PyUnicode_FromString("Unknown error code");
    else
        Py_INCREF(code);
    PyObject *out = (cls && code) ? PyUnicode_FromFormat("%U (0x%s): %U (0x%s)", cls, a, code, b)
                                  : NULL;
    Py_XDECREF(cls);
    Py_XDECREF(code);
    return out;
}

static int
decode_ack(Ev *ev, const u8 *pdu, Py_ssize_t n, const u8 *p, Py_ssize_t pn, const u8 *d,
           Py_ssize_t dn, PyObject *state, Commit *c)
{
    if (n < 12)
        return NOT_COVERED;
    ev_set(&ev->kind, s_response);
    PyObject *pending;
    STEP(state_dict(state, s_pending, &pending));
    PyObject *request = PyDict_GetItemWithError(pending, ev->pair_key);
    Py_XINCREF(request);
    Py_DECREF(pending);
    if (request == NULL && PyErr_Occurred())
        return FAILED;
    int r = COVERED;
    if (request != NULL) {
        c->pend_pop = Py_NewRef(ev->pair_key);
        if (!PyTuple_CheckExact(request) || PyTuple_GET_SIZE(request) != 4
            || !PyLong_CheckExact(PyTuple_GET_ITEM(request, 0))
            || !PyList_Check(PyTuple_GET_ITEM(request, 3)))
            r = NOT_COVERED;
    }
    long func = -1;
    if (r == COVERED) {
        if (pn) {
            func = p[0];
            r = ev_put(&ev->function_code, PyLong_FromLong(func));
        } else if (request) {
            func = PyLong_AsLong(PyTuple_GET_ITEM(request, 0));
            if (func == -1 && PyErr_Occurred())
                r = FAILED;
            else if (func < 0 || func > 255)
                r = NOT_COVERED;
            else
                r = ev_set(&ev->function_code, PyTuple_GET_ITEM(request, 0));
        }
    }
    if (r == COVERED) {
        if (func < 0) {
            ev_set(&ev->function, s_Ack);
            ev_set(&ev->op_class, s_other);
        } else {
            PyObject *known = get_int(JOB_FUNCTIONS, func, NULL);
            if (known) {
                ev_set(&ev->function, PyTuple_GET_ITEM(known, 0));
                ev_set(&ev->op_class, PyTuple_GET_ITEM(known, 1));
            } else if (PyErr_Occurred()) {
                r = FAILED;
            } else {
                r = ev_put(&ev->function, fmt("Unknown function 0x%02lx", func));
                ev_set(&ev->op_class, s_other);
            }
        }
    }
    if (r == COVERED && request && func >= 0
        && PyLong_AsLong(PyTuple_GET_ITEM(request, 0)) == func) {
        ev_set(&ev->op_class, PyTuple_GET_ITEM(request, 2));
        r = ev_put(&ev->targets, PySequence_List(PyTuple_GET_ITEM(request, 3)));
    }
    Py_XDECREF(request);
    STEP(r);
    ev_set(&ev->result, s_ok);
    int err_class = pdu[10], err_code = pdu[11];
    if (err_class || err_code) {
        ev_set(&ev->result, s_error);
        STEP(ev_put(&ev->status, error_status(err_class, err_code)));
        STEP(dset_long(ev->detail, s_error_class, err_class));
        return dset_long(ev->detail, s_error_code, err_code);
    }
    if (!pn)
        return COVERED;
    if (func == F_READ_VAR || func == F_WRITE_VAR) {
        if (pn < 2)
            return NOT_COVERED;
        long count = p[1];
        STEP(dset_long(ev->detail, s_item_count, count));
        Codes codes = {0};
        if (func == F_READ_VAR)
            STEP(data_items(d, dn, count, 0, &codes, NULL, NULL));
        else
            for (long i = 0; i < count && i < dn; i++)
                codes_add(&codes, d[i]);
        return item_results(ev, &codes);
    }
    if (func == F_SETUP_COMM)
        return setup_detail(ev, p, pn);
    if (func == F_START_UPLOAD && pn >= 8) {
        PyObject *id = PyLong_FromUnsignedLong(upload_id(p, pn));
        if (id == NULL)
            return FAILED;
        if (PyDict_SetItem(ev->detail, s_upload_id, id) < 0) {
            Py_DECREF(id);
            return FAILED;
        }
        if (PyList_GET_SIZE(ev->targets)) {
            c->upl_key = id;
            c->upl_val = Py_NewRef(PyList_GET_ITEM(ev->targets, 0));
        } else {
            Py_DECREF(id);
        }
    }
    return COVERED;
}

/* SZL answer: id, index, record length and count, identity records */
static int
szl_response(Ev *ev, const u8 *pl, Py_ssize_t n)
{
    if (n < 8)
        return COVERED;
    unsigned szl_id = be16(pl), index = be16(pl + 2), rec_len = be16(pl + 4), count = be16(pl + 6);
    STEP(dset_long(ev->detail, s_szl_id, szl_id));
    STEP(dset_long(ev->detail, s_szl_index, index));
    STEP(dset_long(ev->detail, s_record_count, count));
    unsigned part = szl_id & 0xFF;
    if (!PyList_GET_SIZE(ev->targets)) {
        PyObject *start = PyLong_FromLong(index);
        PyObject *name = fmt("0x%04x", szl_id);
        int r = (start && name) ? add_target(ev, target(s_szl, start, NULL, NULL, NULL, name)) : FAILED;
        Py_XDECREF(start);
        Py_XDECREF(name);
        STEP(r);
        if (IDENTIFY_SZL[part])
            ev_set(&ev->op_class, s_identify);
    }
    if (!IDENTIFY_SZL[part] || rec_len < 2)
        return COVERED;
    PyObject *identity = PyDict_New();
    if (identity == NULL)
        return FAILED;
    int r = COVERED;
    long limit = count < MAX_DETAIL_ITEMS ? count : MAX_DETAIL_ITEMS;
    for (long i = 0; r == COVERED && i < limit; i++) {
        Py_ssize_t at = 8 + i * (Py_ssize_t)rec_len;
        if (at + (Py_ssize_t)rec_len > n)
            break;
        const u8 *rec = pl + at;
        unsigned rindex = be16(rec);
        PyObject *key = NULL, *val = NULL;
        if (part == SZL_MODULE_ID && rec_len == SZL_0011_RECORD_LEN) {
            if (rindex == SZL_0011_ORDER_NUMBER) {
                key = s_order_number;
                const u8 *z = memchr(rec + 2, 0, 20);
                val = latin1(rec + 2, z ? z - (rec + 2) : 20);
            } else if (rindex == SZL_0011_FIRMWARE && rec[24] == 'V') {
                key = s_firmware;
                val = fmt("V%u.%u.%u", rec[25], rec[26], rec[27]);
                if (val == NULL)
                    r = FAILED;
                else
                    r = PyDict_SetItem(identity, key, val) < 0 ? FAILED : COVERED;
                Py_XDECREF(val);
                continue;
            }
        } else if (part == SZL_COMPONENT_ID) {
            key = get_int(SZL_001C_KEYS, rindex, NULL);
            if (key == NULL && PyErr_Occurred())
                r = FAILED;
            if (key) {
                const u8 *z = memchr(rec + 2, 0, rec_len - 2);
                val = latin1(rec + 2, z ? z - (rec + 2) : (Py_ssize_t)rec_len - 2);
            }
        }
        if (key == NULL)
            continue;
        /* _text: .strip()[:MAX_TEXT] */
        PyObject *stripped = val ? PyObject_CallMethodNoArgs(val, s_strip) : NULL;
        Py_XDECREF(val);
        PyObject *text = stripped ? PyUnicode_Substring(stripped, 0, MAX_TEXT) : NULL;
        Py_XDECREF(stripped);
        if (text == NULL)
            r = FAILED;
        else
            r = PyDict_SetItem(identity, key, text) < 0 ? FAILED : COVERED;
        Py_XDECREF(text);
    }
    PyObject *out = NULL;
    if (r == COVERED) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(identity, &pos, &k, &v)) {
            if (PyUnicode_GET_LENGTH(v) == 0)
                continue;
            if (out == NULL) {
                out = PyDict_New();
                if (out == NULL || PyDict_SetItem(out, s_vendor, s_Siemens) < 0) {
                    r = FAILED;
                    break;
                }
            }
            if (PyDict_SetItem(out, k, v) < 0) {
                r = FAILED;
                break;
            }
        }
    }
    Py_DECREF(identity);
    if (r != COVERED) {
        Py_XDECREF(out);
        return r;
    }
    if (out) {
        ev_set(&ev->op_class, s_identify);
        return ev_put(&ev->identity, out);
    }
    return COVERED;
}

static int
decode_userdata(Ev *ev, const u8 *p, Py_ssize_t pn, const u8 *d, Py_ssize_t dn, PyObject *fc,
                int from_client, long pdu_ref, PyObject *state, Commit *c)
{
    if (pn < 8)
        return NOT_COVERED;
    int ud_type = p[5] >> 4, group = p[5] & 0x0F, sub = p[6], seq = p[7];
    PyObject *kind = get_int(UD_KIND, ud_type, s_notification);
    if (kind == NULL)
        return FAILED;
    ev_set(&ev->kind, kind);
    int is_request = kind == s_request || PyUnicode_Compare(kind, s_request) == 0;
    int is_response = !is_request && PyUnicode_Compare(kind, s_response) == 0;
    int is_notification = !is_request && !is_response;
    PyObject *detail = ev->detail;
    STEP(dset(detail, s_type, Py_NewRef(PyTuple_GET_ITEM(UD_TYPE_NAMES, ud_type))));
    STEP(dset_long(detail, s_funcgroup, group));
    STEP(dset(detail, s_group_name, Py_NewRef(PyTuple_GET_ITEM(UD_GROUP_NAMES, group))));
    STEP(dset_long(detail, s_sequence, seq));
    STEP(ev_put(&ev->function_code, PyLong_FromLong(group << 8 | sub)));
    if (group == UD_GROUP_MODE_TRANSITION) {
        PyObject *g = get_int(UD_GROUPS, group, NULL);
        if (g == NULL)
            return PyErr_Occurred() ? FAILED : NOT_COVERED;
        ev_set(&ev->function, g);
        ev_set(&ev->op_class, s_diagnostic);
        PyObject *mode = get_int(MODE_NAMES, sub, NULL);
        if (mode == NULL && PyErr_Occurred())
            return FAILED;
        STEP(mode ? dset(detail, s_mode, Py_NewRef(mode)) : dset_long(detail, s_mode, sub));
    } else {
        STEP(dset_long(detail, s_subfunc, sub));
        PyObject *subs = get_int(UD_SUBFUNCTIONS, group, NULL);
        PyObject *known = NULL;
        if (subs == NULL && PyErr_Occurred())
            return FAILED;
        if (subs && (known = get_int(subs, sub, NULL)) == NULL && PyErr_Occurred())
            return FAILED;
        if (known) {
            ev_set(&ev->function, PyTuple_GET_ITEM(known, 0));
            ev_set(&ev->op_class, PyTuple_GET_ITEM(known, 1));
        } else {
            PyObject *g = get_int(UD_GROUPS, group, NULL);
            if (g == NULL && PyErr_Occurred())
                return FAILED;
            PyObject *name = g ? PyUnicode_FromFormat("%U subfunction %d", g, sub)
                               : PyUnicode_FromFormat("Group 0x%x subfunction %d", group, sub);
            STEP(ev_put(&ev->function, name));
            ev_set(&ev->op_class, s_other);
        }
    }
    int rc = dn ? d[0] : -1;
    if (rc >= 0)
        STEP(dset_long(detail, s_return_code, rc));
    const u8 *pl = d;
    Py_ssize_t pln = 0;
    if (dn >= 4) {
        pl = d + 4;
        pln = be16(d + 2);
        if (pln > dn - 4)
            pln = dn - 4;
    }
    int extended = p[4] == UD_METHOD_EXTENDED && pn >= UD_EXTENDED_PARAM_LEN;
    if (extended && (p[8] || p[9]) && !OWN_FRAGMENT_GROUP[group]) {
        int ref = p[8], more = p[9];
        STEP(dset_long(detail, s_data_unit_ref, ref));
        STEP(dset(detail, s_last_data_unit, PyBool_FromLong(!more)));
        if (!ref) {
            if (more)
                pln = 0;
        } else {
            if (more)
                return NOT_COVERED;        /* a unit to keep: reassembly left to Python */
            PyObject *units;
            STEP(state_dict(state, s_data_units, &units));
            PyObject *key = Py_BuildValue("(Oi)", fc, ref);
            int has = key ? PyDict_Contains(units, key) : -1;
            Py_XDECREF(key);
            Py_DECREF(units);
            if (has < 0)
                return FAILED;
            if (has)
                return NOT_COVERED;
        }
    }
    if (!is_notification) {
        PyObject *requester = PyBool_FromLong(is_request ? from_client : !from_client);
        STEP(ev_put(&ev->pair_key, Py_BuildValue("(ONlii)", s_s7comm_ud, requester, pdu_ref,
                                                 group, sub)));
        if (is_request) {
            if (group == UD_GROUP_CPU && sub == SUB_READ_SZL && pln >= 4) {
                unsigned szl_id = be16(pl), index = be16(pl + 2);
                PyObject *start = PyLong_FromLong(index);
                PyObject *name = fmt("0x%04x", szl_id);
                int r = (start && name) ? add_target(ev, target(s_szl, start, NULL, NULL, NULL, name))
                                        : FAILED;
                Py_XDECREF(start);
                Py_XDECREF(name);
                STEP(r);
                STEP(dset_long(detail, s_szl_id, szl_id));
                if (IDENTIFY_SZL[szl_id & 0xFF])
                    ev_set(&ev->op_class, s_identify);
            } else if (group == UD_GROUP_CYCLIC && CYCLIC_SUBSCRIBE[sub] && pln >= 4) {
                long count = be16(pl);
                STEP(dset_long(detail, s_item_count, count));
                PyObject *items = NULL;
                int r = param_items(ev, pl + 2, pln - 2, count, &items);
                if (r == COVERED)
                    r = PyDict_SetItem(detail, s_items, items) < 0 ? FAILED : COVERED;
                Py_XDECREF(items);
                STEP(r);
            } else if (group == UD_GROUP_PROGRAMMER && TIS_JOB[sub]) {
                return NOT_COVERED;
            } else if (group == UD_GROUP_SECURITY) {
                STEP(dset(detail, s_password_attempt, Py_NewRef(Py_True)));
            }
            c->pend_key = Py_NewRef(ev->pair_key);
            c->pend_val = PyTuple_Pack(4, ev->function_code, ev->function, ev->op_class, ev->targets);
            if (c->pend_val == NULL)
                return FAILED;
        } else {
            PyObject *pending;
            STEP(state_dict(state, s_pending, &pending));
            PyObject *request = PyDict_GetItemWithError(pending, ev->pair_key);
            Py_XINCREF(request);
            Py_DECREF(pending);
            if (request == NULL && PyErr_Occurred())
                return FAILED;
            if (request) {
                c->pend_pop = Py_NewRef(ev->pair_key);
                int ok = PyTuple_CheckExact(request) && PyTuple_GET_SIZE(request) == 4
                         && PyList_Check(PyTuple_GET_ITEM(request, 3));
                if (ok) {
                    ev_set(&ev->op_class, PyTuple_GET_ITEM(request, 2));
                    ok = ev_put(&ev->targets, PySequence_List(PyTuple_GET_ITEM(request, 3))) == COVERED;
                    if (!ok) {
                        Py_DECREF(request);
                        return FAILED;
                    }
                }
                Py_DECREF(request);
                if (!ok)
                    return NOT_COVERED;
            }
            /* result (Python sets op_class/targets after the result: no interplay) */
            int error = extended ? (int)be16(p + 10) : 0;
            ev_set(&ev->result, s_ok);
            if (error) {
                ev_set(&ev->result, s_error);
                STEP(ev_put(&ev->status, error_status(error >> 8, error & 0xFF)));
            } else if (rc >= 0 && rc != RC_SUCCESS) {
                ev_set(&ev->result, s_error);
                Codes one = {0};
                codes_add(&one, rc);
                STEP(fail_on(ev, &one));
            }
            if (group == UD_GROUP_SECURITY)
                STEP(dset(detail, s_password_accepted,
                          PyBool_FromLong(ev->result == s_ok)));
        }
    }
    if (!pln)
        return COVERED;
    /* _ud_contents */
    if (group == UD_GROUP_CPU) {
        if (sub == SUB_READ_SZL && is_response && ev->result == s_ok)
            return szl_response(ev, pl, pln);
        if (ALARM_SUB[sub])
            return NOT_COVERED;
    } else if (group == UD_GROUP_CYCLIC) {
        if (CYCLIC_SUBSCRIBE[sub] && !is_request && rc == RC_SUCCESS && pln >= 2) {
            long count = be16(pl);
            STEP(dset_long(detail, s_item_count, count));
            Codes codes = {0};
            int r = data_items(pl, pln, count, 2, &codes, NULL, NULL);
            if (r == NOT_COVERED)         /* Python catches the cut item: flagged */
                return ev_flag(ev, a_s7_truncated);
            STEP(r);
            return item_results(ev, &codes);
        }
    } else if (group == UD_GROUP_PROGRAMMER && ud_type == UD_PUSH && TIS_JOB[sub]) {
        return NOT_COVERED;
    }
    return COVERED;
}

/* one S7comm PDU (p[0] == 0x32) -> its event into *ev */
static int
decode_s7(Ev *ev, const u8 *pdu, Py_ssize_t n, PyObject *fc, int from_client, PyObject *state,
          Commit *c)
{
    if (n < 10) {
        STEP(ev_init(ev, s_s7comm, s_notification, s_truncated, s_other));
        return ev_flag(ev, a_s7_truncated);
    }
    int rosctr = pdu[1];
    long pdu_ref = be16(pdu + 4), plen = be16(pdu + 6), dlen = be16(pdu + 8);
    STEP(ev_init(ev, s_s7comm, s_notification, s_truncated, s_other));
    PyObject *rname = get_int(ROSCTR_NAMES, rosctr, s_unknown);
    if (rname == NULL)
        return FAILED;
    STEP(dset_long(ev->detail, s_rosctr, rosctr));
    STEP(dset(ev->detail, s_rosctr_name, Py_NewRef(rname)));
    STEP(dset_long(ev->detail, s_pdu_ref, pdu_ref));
    STEP(dset_long(ev->detail, s_param_length, plen));
    STEP(dset_long(ev->detail, s_data_length, dlen));
    Py_ssize_t hlen = HEADER_LEN[rosctr];
    if (!hlen) {
        STEP(ev_put(&ev->function, fmt("Unknown ROSCTR 0x%02x", rosctr)));
        return ev_flag(ev, a_unknown_rosctr);
    }
    if (hlen + plen + dlen != n)
        STEP(ev_flag(ev, a_length_mismatch));
    Py_ssize_t ps = hlen < n ? hlen : n, pe = hlen + plen < n ? hlen + plen : n;
    Py_ssize_t de = hlen + plen + dlen < n ? hlen + plen + dlen : n;
    const u8 *p = pdu + ps, *d = pdu + pe;
    Py_ssize_t pn = pe - ps, dn = de - pe;
    if (rosctr == ROSCTR_JOB) {
        STEP(ev_put(&ev->pair_key, Py_BuildValue("(OOl)", s_s7comm, fc, pdu_ref)));
        return decode_job(ev, p, pn, d, dn, state, c);
    }
    if (rosctr == ROSCTR_USERDATA)
        return decode_userdata(ev, p, pn, d, dn, fc, from_client, pdu_ref, state, c);
    STEP(ev_put(&ev->pair_key, Py_BuildValue("(ONl)", s_s7comm, PyBool_FromLong(!from_client),
                                             pdu_ref)));
    return decode_ack(ev, pdu, n, p, pn, d, dn, state, c);
}

/* ------------------------------------------------------------------ S7comm-plus */

/* Python's vlq with limit 10, restricted to 9 bytes (63 bits): a longer one is not covered */
static int
vlq(const u8 *b, Py_ssize_t n, Py_ssize_t pos, unsigned long long *value, Py_ssize_t *next)
{
    unsigned long long v = 0;
    for (int i = 0; i < 9; i++) {
        if (pos + i >= n || pos + i < 0)
            return NOT_COVERED;
        u8 x = b[pos + i];
        v = v << 7 | (x & 0x7F);
        if (!(x & 0x80)) {
            *value = v;
            *next = pos + i + 1;
            return COVERED;
        }
    }
    return NOT_COVERED;
}

static int
plus_init(Ev *ev, PyObject *function, PyObject *op_class, PyObject *kind, int ptype)
{
    STEP(ev_init(ev, s_plus, kind, function, op_class));
    PyObject *name = ptype < 0 ? s_unknown : get_int(PDU_TYPE_NAMES, ptype, s_unknown);
    if (name == NULL)
        return FAILED;
    STEP(dset(ev->detail, s_pdu_type, ptype < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(ptype)));
    return dset(ev->detail, s_pdu_type_name, Py_NewRef(name));
}

static PyObject *
object_target(unsigned long obj, int with_attr, unsigned long long attr)
{
    PyObject *name = with_attr ? fmt("0x%08lx.%llu", obj, attr) : fmt("0x%08lx", obj);
    if (name == NULL)
        return NULL;
    PyObject *t = target(with_attr ? s_variable : s_object, NULL, NULL, NULL, NULL, name);
    Py_DECREF(name);
    return t;
}

/* int.from_bytes(b[at:at + 4], "big") (the slice clamps) */
static unsigned long
be32_clamped(const u8 *b, Py_ssize_t n, Py_ssize_t at)
{
    unsigned long v = 0;
    for (Py_ssize_t i = at; i < at + 4 && i < n; i++)
        v = v << 8 | b[i];
    return v;
}

static int
plus_operation(Ev *ev, const u8 *b, Py_ssize_t n, Py_ssize_t off, int opcode, PyObject *kind,
               int ptype, PyObject *state, Commit *c)
{
    if (off + 9 > n)
        return NOT_COVERED;
    long function = be16(b + off + 3), seq = be16(b + off + 7);
    PyObject *known = get_int(PLUS_FUNCTIONS, function, NULL);
    if (known == NULL && PyErr_Occurred())
        return FAILED;
    if (known) {
        STEP(plus_init(ev, PyTuple_GET_ITEM(known, 0), PyTuple_GET_ITEM(known, 1), kind, ptype));
    } else {
        PyObject *name = fmt("Unknown function 0x%04lx", function);
        if (name == NULL)
            return FAILED;
        int r = plus_init(ev, name, s_other, kind, ptype);
        Py_DECREF(name);
        STEP(r);
        STEP(ev_flag(ev, a_plus_unknown_function));
    }
    PyObject *seqo = PyLong_FromLong(seq);
    if (seqo == NULL)
        return FAILED;
    STEP(ev_put(&ev->function_code, PyLong_FromLong(function)));
    STEP(ev_put(&ev->pair_key, PyTuple_Pack(2, s_plus, seqo)));
    STEP(dset(ev->detail, s_sequence, seqo));
    Py_ssize_t body = off + 9;
    PyObject *st = PyObject_GetAttr(state, s_plus_attr);
    if (st == NULL)
        return FAILED;
    int r = COVERED;
    if (kind == s_request || PyUnicode_Compare(kind, s_request) == 0) {
        unsigned long session = be32_clamped(b, n, body);
        r = dset(ev->detail, s_session_id, PyLong_FromUnsignedLong(session));
        Py_ssize_t at = body + 5;
        if (r == COVERED && function == F_CREATE_OBJECT) {
            PyObject *op = NULL;
            if (session == (unsigned long)OBJECT_NULL_SERVER_SESSION) {
                op = s_session;
            } else {
                Py_ssize_t start = -1;
                for (Py_ssize_t i = at; i < at + 16 && i < n; i++)
                    if (b[i] == ITEM_START_OBJECT) {
                        start = i;
                        break;
                    }
                PyObject *deflt = PyTuple_GET_ITEM(get_int(PLUS_FUNCTIONS, F_CREATE_OBJECT, NULL), 1);
                if (start < 0) {
                    op = deflt;
                } else {
                    unsigned long long class_id;
                    Py_ssize_t next;
                    r = vlq(b, n, start + 5, &class_id, &next);
                    if (r == COVERED) {
                        op = class_id <= 0x7FFFFFFF ? get_int(CLASS_OP, (long)class_id, deflt) : deflt;
                        if (op == NULL)
                            r = FAILED;
                    }
                }
            }
            if (r == COVERED) {
                ev_set(&ev->op_class, op);
                c->creates_key = PyLong_FromLong(seq);
                c->creates_val = Py_NewRef(op);
                if (c->creates_key == NULL)
                    r = FAILED;
            }
        } else if (r == COVERED && function == F_DELETE_OBJECT) {
            unsigned long obj = be32_clamped(b, n, at);
            r = add_target(ev, object_target(obj, 0, 0));
            PyObject *objo = r == COVERED ? PyLong_FromUnsignedLong(obj) : NULL;
            PyObject *sid = objo ? PyObject_GetAttr(st, s_session_id) : NULL;
            PyObject *objects = NULL;
            if (sid == NULL)
                r = FAILED;
            else {
                int same = PyObject_RichCompareBool(objo, sid, Py_EQ);
                if (same < 0)
                    r = FAILED;
                else if (same)
                    ev_set(&ev->op_class, s_session);
                else if ((r = state_dict(st, s_objects, &objects)) == COVERED) {
                    PyObject *op = PyDict_GetItemWithError(objects, objo);
                    if (op) {
                        ev_set(&ev->op_class, op);
                        c->objects_pop = Py_NewRef(objo);
                    } else if (PyErr_Occurred()) {
                        r = FAILED;
                    }
                }
            }
            Py_XDECREF(objects);
            Py_XDECREF(sid);
            Py_XDECREF(objo);
        } else if (r == COVERED && function == F_SET_VARIABLE) {
            unsigned long obj = be32_clamped(b, n, at);
            unsigned long long count, attr, value;
            Py_ssize_t pos;
            r = vlq(b, n, at + 4, &count, &pos);
            if (r == COVERED)
                r = vlq(b, n, pos, &attr, &pos);
            if (r == COVERED)
                r = add_target(ev, object_target(obj, 1, attr));
            if (r == COVERED && obj == (unsigned long)OBJECT_CPU_EXEC_UNIT
                && attr == (unsigned long long)ATTR_OPERATING_STATE_REQ) {
                r = vlq(b, n, pos + 2, &value, &pos);
                if (r == COVERED) {
                    ev_set(&ev->op_class, s_control);
                    PyObject *v = PyLong_FromUnsignedLongLong(value);
                    PyObject *name = v ? PyDict_GetItemWithError(CPU_STATE_NAMES, v) : NULL;
                    if (v == NULL || (name == NULL && PyErr_Occurred()))
                        r = FAILED;
                    else
                        r = dset(ev->detail, s_cpu_state_request, Py_NewRef(name ? name : v));
                    Py_XDECREF(v);
                }
            }
        }
    } else {
        unsigned long long retval;
        Py_ssize_t pos;
        r = vlq(b, n, body + 1, &retval, &pos);
        if (r == COVERED) {
            long error_code = (long)(retval & 0xFFFF);
            int failed = error_code >= 0x8000;
            ev_set(&ev->result, failed ? s_error : s_ok);
            r = dset(ev->detail, s_return_value, PyLong_FromUnsignedLongLong(retval));
            if (r == COVERED && failed)
                r = ev_put(&ev->status, fmt("Error %ld (return value 0x%llx)",
                                            error_code - 0x10000, retval));
        }
        if (r == COVERED && function == F_CREATE_OBJECT) {
            if (ptype == PDU_CONNECT || pos >= n) {
                r = NOT_COVERED;          /* identity of the connect answer: left to Python */
            } else {
                PyObject *creates = NULL, *op = NULL;
                r = state_dict(st, s_creates, &creates);
                PyObject *seqk = r == COVERED ? PyLong_FromLong(seq) : NULL;
                if (r == COVERED && seqk == NULL)
                    r = FAILED;
                if (r == COVERED) {
                    op = PyDict_GetItemWithError(creates, seqk);
                    if (op) {
                        ev_set(&ev->op_class, op);
                        c->creates_pop = Py_NewRef(seqk);
                    } else if (PyErr_Occurred()) {
                        r = FAILED;
                    }
                }
                if (r == COVERED && b[pos]) {
                    unsigned long long obj;
                    Py_ssize_t next;
                    r = vlq(b, n, pos + 1, &obj, &next);
                    if (r == COVERED && obj > 0xFFFFFFFFULL)
                        r = NOT_COVERED;
                    if (r == COVERED)
                        r = add_target(ev, object_target((unsigned long)obj, 0, 0));
                    if (r == COVERED && op != NULL) {
                        PyObject *objo = PyLong_FromUnsignedLongLong(obj);
                        if (objo == NULL)
                            r = FAILED;
                        else if (PyUnicode_Check(op) && PyUnicode_Compare(op, s_session) == 0) {
                            c->session_id = objo;
                        } else {
                            c->objects_key = objo;
                            c->objects_val = Py_NewRef(op);
                        }
                    }
                }
                Py_XDECREF(seqk);
                Py_XDECREF(creates);
            }
        }
    }
    Py_DECREF(st);
    return r;
}

static int
decode_plus(Ev *ev, const u8 *b, Py_ssize_t n, PyObject *fc, PyObject *state, Commit *c,
            PyObject **out)
{
    int ptype = n > 1 ? b[1] : -1;
    if (n < PLUS_HEADER_LEN) {
        STEP(plus_init(ev, s_truncated, s_other, s_notification, ptype));
        return ev_flag(ev, a_plus_truncated);
    }
    long dlen = be16(b + 2);
    if (ptype == PDU_KEEPALIVE)
        return plus_init(ev, s_keep_alive, s_session, s_notification, ptype);
    if (!FRAMED_TYPE[ptype]) {
        if (ptype == PDU_SYSTEM) {
            STEP(plus_init(ev, s_system_pdu, s_session, s_notification, ptype));
        } else {
            PyObject *name = fmt("Unknown PDU type 0x%02x", ptype);
            if (name == NULL)
                return FAILED;
            int r = plus_init(ev, name, s_other, s_notification, ptype);
            Py_DECREF(name);
            STEP(r);
            STEP(ev_flag(ev, a_plus_unknown_type));
        }
        return dset_long(ev->detail, s_data_length, dlen);
    }
    int has_trailer = n > dlen + PLUS_HEADER_LEN;
    PyObject *st = PyObject_GetAttr(state, s_plus_attr);
    if (st == NULL)
        return FAILED;
    PyObject *pend_map = NULL;
    int r = state_dict(st, s_pending, &pend_map);
    Py_DECREF(st);
    STEP(r);
    PyObject *pending = PyDict_GetItemWithError(pend_map, fc);
    if (pending) {
        /* a continuation fragment: counted on the held event, which comes out at the end */
        PyObject *cont = PyObject_GetAttr(pending, s_continuations);
        long k = cont ? PyLong_AsLong(cont) : -1;
        Py_XDECREF(cont);
        if (k == -1 && PyErr_Occurred()) {
            Py_DECREF(pend_map);
            return FAILED;
        }
        k += 1;
        PyObject *ko = PyLong_FromLong(k);
        r = (ko && PyObject_SetAttr(pending, s_continuations, ko) == 0) ? COVERED : FAILED;
        if (r == COVERED && (has_trailer || k >= MAX_CONTINUATION_FRAGMENTS)) {
            PyObject *event = PyObject_GetAttr(pending, s_event);
            PyObject *detail = event ? PyObject_GetAttr(event, s_detail) : NULL;
            PyObject *anomalies = detail ? PyObject_GetAttr(event, s_anomalies) : NULL;
            if (anomalies == NULL || PyDict_DelItem(pend_map, fc) < 0
                || PyDict_SetItem(detail, s_continuation_fragments, ko) < 0
                || (!has_trailer && PyList_Append(anomalies, a_plus_too_many) < 0))
                r = FAILED;
            else
                *out = PyList_New(1);
            if (*out) {
                PyList_SET_ITEM(*out, 0, event);
                event = NULL;
            } else {
                r = FAILED;
            }
            Py_XDECREF(event);
            Py_XDECREF(detail);
            Py_XDECREF(anomalies);
        } else if (r == COVERED) {
            *out = PyList_New(0);
            r = *out ? COVERED : FAILED;
        }
        Py_XDECREF(ko);
        Py_DECREF(pend_map);
        return r;
    }
    Py_DECREF(pend_map);
    if (PyErr_Occurred())
        return FAILED;
    Py_ssize_t off = PLUS_HEADER_LEN;
    int integrity = ptype == PDU_DATA_FW15;
    if (integrity) {
        if (n <= off)
            return NOT_COVERED;
        off += 1 + b[off];
    }
    if (off >= n)
        return NOT_COVERED;
    int opcode = b[off];
    PyObject *kind = get_int(OPCODE_KIND, opcode, NULL);
    if (kind == NULL && PyErr_Occurred())
        return FAILED;
    if (kind == NULL) {
        PyObject *name = fmt("Unknown opcode 0x%02x", opcode);
        if (name == NULL)
            return FAILED;
        r = plus_init(ev, name, s_other, s_notification, ptype);
        Py_DECREF(name);
        STEP(r);
        STEP(ev_flag(ev, a_plus_unknown_opcode));
    } else if (opcode == OP_NOTIFICATION) {
        STEP(plus_init(ev, s_notification_fn, s_read, kind, ptype));
    } else {
        STEP(plus_operation(ev, b, n, off, opcode, kind, ptype, state, c));
    }
    PyObject *oname = get_int(OPCODE_NAMES, opcode, s_unknown);
    if (oname == NULL)
        return FAILED;
    STEP(dset_long(ev->detail, s_opcode, opcode));
    STEP(dset(ev->detail, s_opcode_name, Py_NewRef(oname)));
    STEP(dset_long(ev->detail, s_data_length, dlen));
    if (integrity)
        STEP(dset(ev->detail, s_integrity, Py_NewRef(Py_True)));
    if (!has_trailer) {
        PyObject *e = ev_build(ev);
        if (e == NULL)
            return FAILED;
        c->plus_hold = PyObject_CallOneArg(PendingPduCls, e);
        Py_DECREF(e);
        if (c->plus_hold == NULL)
            return FAILED;
        *out = PyList_New(0);
        return *out ? COVERED : FAILED;
    }
    return COVERED;
}

/* ------------------------------------------------------------------ TPKT / COTP */

static int
cotp_event(Ev *ev, PyObject *function, PyObject *kind, PyObject *anomaly, long code)
{
    STEP(ev_init(ev, s_cotp, kind, function, s_session));
    if (code >= 0)
        STEP(ev_put(&ev->function_code, PyLong_FromLong(code)));
    return anomaly ? ev_flag(ev, anomaly) : COVERED;
}

static PyObject *
tsap_detail(const u8 *v, Py_ssize_t n)
{
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    char hex[2 * 255 + 1];
    for (Py_ssize_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", v[i]);
    if (dset(out, s_hex, PyUnicode_FromStringAndSize(hex, 2 * n)) < 0)
        goto fail;
    if (n > 2) {
        int text = 1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (v[i] < 0x20 || v[i] >= 0x7F)
                text = 0;
        if (text && dset(out, s_text, PyUnicode_FromStringAndSize((const char *)v, n)) < 0)
            goto fail;
    }
    if (n == 2) {
        PyObject *ct = get_int(TSAP_CONNECTION_TYPES, v[0], NULL);
        if (ct == NULL && PyErr_Occurred())
            goto fail;
        if (dset(out, s_connection_type, ct ? Py_NewRef(ct) : fmt("0x%02x", v[0])) < 0
            || dset_long(out, s_rack, v[1] >> 5) < 0 || dset_long(out, s_slot, v[1] & 0x1F) < 0)
            goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static int
decode_connect(Ev *ev, const u8 *m, Py_ssize_t li, int code)
{
    int is_cr = code == COTP_CR;
    PyObject *name = PyUnicode_FromString(is_cr ? "Connection Request" : "Connection Confirm");
    if (name == NULL)
        return FAILED;
    int r = cotp_event(ev, name, is_cr ? s_request : s_response, NULL, code >> 4);
    Py_DECREF(name);
    STEP(r);
    STEP(ev_put(&ev->pair_key, PyTuple_Pack(2, s_cotp, s_connect)));
    if (li < 6)
        return ev_flag(ev, a_invalid_li);
    /* parse_params: the last occurrence of a code wins, its first position kept */
    const u8 *val[256];
    int vlen[256];
    memset(vlen, -1, sizeof vlen);
    Py_ssize_t i = 11, end = 5 + li;
    while (i + 2 <= end) {
        int pcode = m[i], plen = m[i + 1];
        if (i + 2 + plen > end)
            break;
        val[pcode] = m + i + 2;
        vlen[pcode] = plen;
        i += 2 + plen;
    }
    PyObject *detail = ev->detail;
    STEP(dset_long(detail, s_dst_ref, be16(m + 6)));
    STEP(dset_long(detail, s_src_ref, be16(m + 8)));
    STEP(dset_long(detail, s_class, m[10] >> 4));
    if (vlen[PARAM_TPDU_SIZE] > 0) {
        int e = val[PARAM_TPDU_SIZE][0] < 16 ? val[PARAM_TPDU_SIZE][0] : 16;
        STEP(dset_long(detail, s_tpdu_size, 1L << e));
    }
    if (vlen[PARAM_SRC_TSAP] >= 0)
        STEP(dset(detail, s_src_tsap, tsap_detail(val[PARAM_SRC_TSAP], vlen[PARAM_SRC_TSAP])));
    if (vlen[PARAM_DST_TSAP] >= 0) {
        PyObject *dst = tsap_detail(val[PARAM_DST_TSAP], vlen[PARAM_DST_TSAP]);
        if (dst == NULL)
            return FAILED;
        r = PyDict_SetItem(detail, s_dst_tsap, dst) < 0 ? FAILED : COVERED;
        PyObject *rack = PyDict_GetItem(dst, s_rack);
        if (r == COVERED && is_cr && rack) {
            r = PyDict_SetItem(detail, s_rack, rack) < 0 ? FAILED : COVERED;
            if (r == COVERED)
                r = PyDict_SetItem(detail, s_slot, PyDict_GetItem(dst, s_slot)) < 0 ? FAILED : COVERED;
        }
        Py_DECREF(dst);
        STEP(r);
    }
    if (vlen[PARAM_SRC_TSAP] < 0 && vlen[PARAM_DST_TSAP] < 0)
        STEP(ev_flag(ev, a_missing_tsap));
    return COVERED;
}

static int
decode_tpkt(Ev *ev, PyObject *msg, int from_client, PyObject *state, Commit *c, PyObject **out)
{
    const u8 *m = (const u8 *)PyBytes_AS_STRING(msg);
    Py_ssize_t size = PyBytes_GET_SIZE(msg);
    if (size < TPKT_MIN_LEN || m[0] != TPKT_VERSION || m[1] || (Py_ssize_t)be16(m + 2) != size)
        return cotp_event(ev, s_malformed, s_notification, a_invalid_tpkt, -1);
    Py_ssize_t li = m[4];
    if (li < 2 || 5 + li > size)
        return cotp_event(ev, s_malformed, s_notification, a_invalid_li, -1);
    int code = m[5] & 0xF0;
    if (code == COTP_CR || code == COTP_CC)
        return decode_connect(ev, m, li, code);
    if (code == COTP_DR || code == COTP_DC) {
        if (code == COTP_DR && li >= 6 && size < 12)
            return NOT_COVERED;
        PyObject *name = PyUnicode_FromString(code == COTP_DR ? "Disconnect Request"
                                                               : "Disconnect Confirm");
        if (name == NULL)
            return FAILED;
        int r = cotp_event(ev, name, s_notification, NULL, code >> 4);
        Py_DECREF(name);
        STEP(r);
        if (code == COTP_DR && li >= 6)
            STEP(dset_long(ev->detail, s_reason, m[11]));
        return COVERED;
    }
    if (code != COTP_DT) {
        PyObject *name = get_int(COTP_TYPE_NAMES, code, NULL);
        if (name == NULL && PyErr_Occurred())
            return FAILED;
        if (code == COTP_ER) {
            STEP(cotp_event(ev, name, s_notification, a_tpdu_error, code >> 4));
            return ev_set(&ev->result, s_error);
        }
        if (name)
            return cotp_event(ev, name, s_notification, a_unexpected_tpdu, code >> 4);
        PyObject *fn = fmt("Unknown TPDU 0x%02x", m[5]);
        if (fn == NULL)
            return FAILED;
        int r = cotp_event(ev, fn, s_notification, a_unknown_tpdu, -1);
        Py_DECREF(fn);
        return r;
    }
    /* DT */
    PyObject *fc = from_client ? Py_True : Py_False;
    const u8 *pl = m + 5 + li;
    Py_ssize_t pln = size - 5 - li;
    int eot = m[6] & DT_EOT;
    PyObject *tsdu;
    STEP(state_dict(state, s_tsdu, &tsdu));
    PyObject *pending = PyDict_GET_SIZE(tsdu) ? PyDict_GetItemWithError(tsdu, fc) : NULL;
    Py_XINCREF(pending);
    if (pending == NULL && PyErr_Occurred()) {
        Py_DECREF(tsdu);
        return FAILED;
    }
    PyObject *joined = NULL;
    int r = COVERED;
    if (!eot) {
        /* one more part of the TSDU of this direction (nothing decoded yet) */
        PyObject *piece = PyBytes_FromStringAndSize((const char *)pl, pln);
        if (piece == NULL)
            r = FAILED;
        else if (pending == NULL) {
            PyObject *parts = PyList_New(1);
            PyObject *sz = PyLong_FromSsize_t(pln);
            if (parts && sz) {
                PyList_SET_ITEM(parts, 0, Py_NewRef(piece));
                pending = PyObject_CallFunctionObjArgs(TsduCls, parts, sz, NULL);
                if (pending == NULL || PyDict_SetItem(tsdu, fc, pending) < 0)
                    r = FAILED;
            } else {
                r = FAILED;
            }
            Py_XDECREF(parts);
            Py_XDECREF(sz);
        } else {
            PyObject *parts = PyObject_GetAttr(pending, s_parts);
            PyObject *sz = parts ? PyObject_GetAttr(pending, s_size) : NULL;
            PyObject *nsz = NULL;
            if (sz == NULL || !PyList_Check(parts) || !PyLong_CheckExact(sz))
                r = sz ? NOT_COVERED : FAILED;
            else {
                PyObject *add = PyLong_FromSsize_t(pln);
                nsz = add ? PyNumber_Add(sz, add) : NULL;
                Py_XDECREF(add);
                if (nsz == NULL || PyList_Append(parts, piece) < 0
                    || PyObject_SetAttr(pending, s_size, nsz) < 0)
                    r = FAILED;
            }
            Py_XDECREF(parts);
            Py_XDECREF(sz);
            Py_XDECREF(nsz);
        }
        Py_XDECREF(piece);
        if (r == COVERED) {
            PyObject *parts = PyObject_GetAttr(pending, s_parts);
            PyObject *sz = parts ? PyObject_GetAttr(pending, s_size) : NULL;
            long total = sz ? PyLong_AsLong(sz) : -1;
            if (sz == NULL || (total == -1 && PyErr_Occurred()))
                r = FAILED;
            else if (total > MAX_TSDU_BYTES || PyList_GET_SIZE(parts) > MAX_TSDU_FRAGMENTS) {
                r = PyDict_DelItem(tsdu, fc) < 0 ? FAILED
                    : cotp_event(ev, s_Data, s_notification, a_overflow, -1);
            } else {
                *out = PyList_New(0);
                r = *out ? COVERED : FAILED;
            }
            Py_XDECREF(parts);
            Py_XDECREF(sz);
        }
        Py_XDECREF(pending);
        Py_DECREF(tsdu);
        return r;
    }
    Py_DECREF(tsdu);
    if (pending != NULL) {
        /* the end of a TSDU: b"".join(parts) + payload, the pending entry deleted if covered */
        PyObject *parts = PyObject_GetAttr(pending, s_parts);
        Py_DECREF(pending);
        if (parts == NULL)
            return FAILED;
        Py_ssize_t total = pln;
        int ok = PyList_CheckExact(parts);
        for (Py_ssize_t i = 0; ok && i < PyList_GET_SIZE(parts); i++) {
            PyObject *part = PyList_GET_ITEM(parts, i);
            ok = PyBytes_CheckExact(part);
            if (ok)
                total += PyBytes_GET_SIZE(part);
        }
        if (!ok) {
            Py_DECREF(parts);
            return NOT_COVERED;
        }
        joined = PyBytes_FromStringAndSize(NULL, total);
        if (joined == NULL) {
            Py_DECREF(parts);
            return FAILED;
        }
        char *w = PyBytes_AS_STRING(joined);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
            PyObject *part = PyList_GET_ITEM(parts, i);
            memcpy(w, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
            w += PyBytes_GET_SIZE(part);
        }
        memcpy(w, pl, (size_t)pln);
        Py_DECREF(parts);
        pl = (const u8 *)PyBytes_AS_STRING(joined);
        pln = total;
        c->tsdu_del = fc;
    }
    if (!pln) {
        *out = PyList_New(0);
        r = *out ? COVERED : FAILED;
    } else if (pl[0] == S7_ID) {
        r = decode_s7(ev, pl, pln, fc, from_client, state, c);
    } else if (pl[0] == PLUS_ID) {
        r = decode_plus(ev, pl, pln, fc, state, c, out);
    } else {
        r = cotp_event(ev, s_Data, s_notification, a_unknown_payload, -1);
        if (r == COVERED) {
            ev_set(&ev->op_class, s_other);
            r = dset_long(ev->detail, s_first_byte, pl[0]);
        }
    }
    Py_XDECREF(joined);
    return r;
}

PyObject *
otsec_s7comm_decode(PyObject *msg, int from_client, PyObject *state)
{
    if (!PyBytes_Check(msg))
        Py_RETURN_NOTIMPLEMENTED;
    Ev ev;
    memset(&ev, 0, sizeof ev);
    Commit c;
    memset(&c, 0, sizeof c);
    PyObject *out = NULL;
    int r = decode_tpkt(&ev, msg, from_client, state, &c, &out);
    if (r == COVERED && out == NULL && ev.protocol == NULL)
        r = NOT_COVERED;
    if (r == COVERED && commit_apply(&c, state, from_client ? Py_True : Py_False) < 0)
        r = FAILED;
    commit_clear(&c);
    if (r != COVERED) {
        ev_clear(&ev);
        Py_XDECREF(out);
        if (r == FAILED)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (out != NULL) {
        ev_clear(&ev);
        return out;
    }
    return ev_list(&ev);
}

/* ------------------------------------------------------------------ init */

static int
load_obj(PyObject *mod, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(mod, name);
    return *out ? 0 : -1;
}

/* a set (or dict keys) of small ints -> a byte-indexed membership table */
static int
load_set(PyObject *mod, const char *name, u8 *table)
{
    PyObject *s = PyObject_GetAttrString(mod, name);
    if (s == NULL)
        return -1;
    PyObject *it = PyObject_GetIter(s);
    Py_DECREF(s);
    if (it == NULL)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        long v = PyLong_AsLong(item);
        Py_DECREF(item);
        if (v < 0 || v > 255) {
            Py_DECREF(it);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "s7comm twin: %s holds %ld", name, v);
            return -1;
        }
        table[v] = 1;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

/* _HEADER_LEN: ROSCTR -> header length */
static int
load_header_len(PyObject *mod)
{
    PyObject *d = PyObject_GetAttrString(mod, "_HEADER_LEN");
    if (d == NULL)
        return -1;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v)) {
        long key = PyLong_AsLong(k), len = PyLong_AsLong(v);
        if (key < 0 || key > 255 || len <= 0 || len > 255) {
            Py_DECREF(d);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "s7comm twin: bad _HEADER_LEN");
            return -1;
        }
        HEADER_LEN[key] = (u8)len;
    }
    Py_DECREF(d);
    return 0;
}

/* The twin of s7comm.frame (the reference): one TPKT, its declared length (at least
 * TPKT_MIN_LEN); NEED_MORE is 0, UNFRAMEABLE -1. */
Py_ssize_t
otsec_s7comm_frame(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
{
    Py_ssize_t avail = len - pos;
    if (avail < TPKT_HEADER_LEN)
        return 0;
    if (buf[pos] != TPKT_VERSION || buf[pos + 1])
        return -1;
    Py_ssize_t length = (buf[pos + 2] << 8) | buf[pos + 3];
    if (length < TPKT_MIN_LEN)
        return -1;
    return avail >= length ? length : 0;
}

/* The twin of s7comm.probe where the TPKT header already refuses (most traffic that is
 * not S7: other TPKT users such as RDP, and everything else); a TPKT with room for a
 * COTP header is left to the Python probe (COTP parameters, S7comm-plus starts). */
int
otsec_s7comm_probe(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
{
    if (pos < 0 || len - pos < TPKT_HEADER_LEN + 2 || buf[pos] != TPKT_VERSION || buf[pos + 1])
        return 0;
    return ((buf[pos + 2] << 8) | buf[pos + 3]) < TPKT_MIN_LEN ? 0 : OTSEC_PROBE_UNSURE;
}

int
otsec_s7comm_init(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1;
    STRINGS(INTERN)
#undef INTERN
    PyObject *s7 = PyImport_ImportModule("otsec.decoders.s7comm");
    PyObject *cotp = s7 ? PyImport_ImportModule("otsec.decoders.cotp") : NULL;
    PyObject *plus = cotp ? PyImport_ImportModule("otsec.decoders.s7comm_plus") : NULL;
    int bad = plus == NULL
        || load_obj(s7, "_Tsdu", &TsduCls) || load_obj(plus, "_PendingPdu", &PendingPduCls)
        || load_obj(s7, "JOB_FUNCTIONS", &JOB_FUNCTIONS)
        || load_obj(s7, "ERROR_CLASS_NAMES", &ERROR_CLASS_NAMES)
        || load_obj(s7, "ERROR_CODE_NAMES", &ERROR_CODE_NAMES)
        || load_obj(s7, "RETURN_CODES", &RETURN_CODES) || load_obj(s7, "ROSCTR_NAMES", &ROSCTR_NAMES)
        || load_obj(s7, "_SYNTAX_NAMES", &SYNTAX_NAMES) || load_obj(s7, "_AREA_INFO", &AREA_INFO)
        || load_obj(s7, "_SIZE_INFO", &SIZE_INFO) || load_obj(s7, "_RC_NAMES", &RC_NAMES)
        || load_obj(s7, "_UD_TYPE_NAMES", &UD_TYPE_NAMES)
        || load_obj(s7, "_UD_GROUP_NAMES", &UD_GROUP_NAMES)
        || load_obj(s7, "UD_GROUPS", &UD_GROUPS) || load_obj(s7, "UD_SUBFUNCTIONS", &UD_SUBFUNCTIONS)
        || load_obj(s7, "_UD_KIND", &UD_KIND) || load_obj(s7, "MODE_NAMES", &MODE_NAMES)
        || load_obj(s7, "BLOCK_TYPES", &BLOCK_TYPES) || load_obj(s7, "FILESYSTEMS", &FILESYSTEMS)
        || load_obj(s7, "PI_SERVICE_OPS", &PI_SERVICE_OPS)
        || load_obj(s7, "SZL_001C_KEYS", &SZL_001C_KEYS)
        || load_obj(cotp, "COTP_TYPE_NAMES", &COTP_TYPE_NAMES)
        || load_obj(cotp, "TSAP_CONNECTION_TYPES", &TSAP_CONNECTION_TYPES)
        || load_obj(plus, "FUNCTIONS", &PLUS_FUNCTIONS)
        || load_obj(plus, "PDU_TYPE_NAMES", &PDU_TYPE_NAMES)
        || load_obj(plus, "OPCODE_NAMES", &OPCODE_NAMES) || load_obj(plus, "_OPCODE_KIND", &OPCODE_KIND)
        || load_obj(plus, "CPU_STATE_REQUEST_NAMES", &CPU_STATE_NAMES)
        || load_obj(plus, "_CLASS_OP", &CLASS_OP)
        || otsec_module_long(s7, "S7_ID", &S7_ID) || otsec_module_long(s7, "ROSCTR_JOB", &ROSCTR_JOB)
        || otsec_module_long(s7, "ROSCTR_USERDATA", &ROSCTR_USERDATA)
        || otsec_module_long(s7, "F_READ_VAR", &F_READ_VAR) || otsec_module_long(s7, "F_WRITE_VAR", &F_WRITE_VAR)
        || otsec_module_long(s7, "F_UPLOAD", &F_UPLOAD) || otsec_module_long(s7, "F_END_UPLOAD", &F_END_UPLOAD)
        || otsec_module_long(s7, "F_START_UPLOAD", &F_START_UPLOAD)
        || otsec_module_long(s7, "F_PI_SERVICE", &F_PI_SERVICE) || otsec_module_long(s7, "F_PLC_STOP", &F_PLC_STOP)
        || otsec_module_long(s7, "F_SETUP_COMM", &F_SETUP_COMM)
        || otsec_module_long(s7, "SYNTAX_S7ANY", &SYNTAX_S7ANY) || otsec_module_long(s7, "SYNTAX_DBREAD", &SYNTAX_DBREAD)
        || otsec_module_long(s7, "ITEM_VAR_SPEC", &ITEM_VAR_SPEC) || otsec_module_long(s7, "RC_SUCCESS", &RC_SUCCESS)
        || otsec_module_long(s7, "UD_GROUP_CPU", &UD_GROUP_CPU)
        || otsec_module_long(s7, "UD_GROUP_SECURITY", &UD_GROUP_SECURITY)
        || otsec_module_long(s7, "UD_GROUP_MODE_TRANSITION", &UD_GROUP_MODE_TRANSITION)
        || otsec_module_long(s7, "UD_GROUP_PROGRAMMER", &UD_GROUP_PROGRAMMER)
        || otsec_module_long(s7, "UD_GROUP_CYCLIC", &UD_GROUP_CYCLIC)
        || otsec_module_long(s7, "SUB_READ_SZL", &SUB_READ_SZL) || otsec_module_long(s7, "UD_PUSH", &UD_PUSH)
        || otsec_module_long(s7, "UD_METHOD_EXTENDED", &UD_METHOD_EXTENDED)
        || otsec_module_long(s7, "UD_EXTENDED_PARAM_LEN", &UD_EXTENDED_PARAM_LEN)
        || otsec_module_long(s7, "SZL_MODULE_ID", &SZL_MODULE_ID)
        || otsec_module_long(s7, "SZL_COMPONENT_ID", &SZL_COMPONENT_ID)
        || otsec_module_long(s7, "SZL_0011_RECORD_LEN", &SZL_0011_RECORD_LEN)
        || otsec_module_long(s7, "SZL_0011_ORDER_NUMBER", &SZL_0011_ORDER_NUMBER)
        || otsec_module_long(s7, "SZL_0011_FIRMWARE", &SZL_0011_FIRMWARE)
        || otsec_module_long(s7, "MAX_TSDU_BYTES", &MAX_TSDU_BYTES)
        || otsec_module_long(s7, "MAX_TSDU_FRAGMENTS", &MAX_TSDU_FRAGMENTS)
        || otsec_module_long(s7, "MAX_DETAIL_ITEMS", &MAX_DETAIL_ITEMS)
        || otsec_module_long(s7, "MAX_VALUE_BYTES", &MAX_VALUE_BYTES)
        || otsec_module_long(s7, "MAX_PENDING", &MAX_PENDING) || otsec_module_long(s7, "MAX_UPLOADS", &MAX_UPLOADS)
        || otsec_module_long(s7, "MAX_TEXT", &MAX_TEXT)
        || otsec_module_long(cotp, "TPKT_VERSION", &TPKT_VERSION) || otsec_module_long(cotp, "TPKT_MIN_LEN", &TPKT_MIN_LEN)
        || otsec_module_long(cotp, "TPKT_HEADER_LEN", &TPKT_HEADER_LEN)
        || otsec_module_long(cotp, "COTP_CR", &COTP_CR) || otsec_module_long(cotp, "COTP_CC", &COTP_CC)
        || otsec_module_long(cotp, "COTP_DR", &COTP_DR) || otsec_module_long(cotp, "COTP_DC", &COTP_DC)
        || otsec_module_long(cotp, "COTP_DT", &COTP_DT) || otsec_module_long(cotp, "COTP_ER", &COTP_ER)
        || otsec_module_long(cotp, "DT_EOT", &DT_EOT) || otsec_module_long(cotp, "PARAM_TPDU_SIZE", &PARAM_TPDU_SIZE)
        || otsec_module_long(cotp, "PARAM_SRC_TSAP", &PARAM_SRC_TSAP)
        || otsec_module_long(cotp, "PARAM_DST_TSAP", &PARAM_DST_TSAP)
        || otsec_module_long(plus, "PLUS_ID", &PLUS_ID) || otsec_module_long(plus, "HEADER_LEN", &PLUS_HEADER_LEN)
        || otsec_module_long(plus, "PDU_CONNECT", &PDU_CONNECT) || otsec_module_long(plus, "PDU_DATA_FW15", &PDU_DATA_FW15)
        || otsec_module_long(plus, "PDU_SYSTEM", &PDU_SYSTEM) || otsec_module_long(plus, "PDU_KEEPALIVE", &PDU_KEEPALIVE)
        || otsec_module_long(plus, "OP_NOTIFICATION", &OP_NOTIFICATION)
        || otsec_module_long(plus, "F_CREATE_OBJECT", &F_CREATE_OBJECT)
        || otsec_module_long(plus, "F_DELETE_OBJECT", &F_DELETE_OBJECT)
        || otsec_module_long(plus, "F_SET_VARIABLE", &F_SET_VARIABLE)
        || otsec_module_long(plus, "OBJECT_NULL_SERVER_SESSION", &OBJECT_NULL_SERVER_SESSION)
        || otsec_module_long(plus, "OBJECT_CPU_EXEC_UNIT", &OBJECT_CPU_EXEC_UNIT)
        || otsec_module_long(plus, "ATTR_OPERATING_STATE_REQ", &ATTR_OPERATING_STATE_REQ)
        || otsec_module_long(plus, "ITEM_START_OBJECT", &ITEM_START_OBJECT)
        || otsec_module_long(plus, "MAX_CONTINUATION_FRAGMENTS", &MAX_CONTINUATION_FRAGMENTS)
        || otsec_module_long(plus, "MAX_TRACKED_OBJECTS", &MAX_TRACKED_OBJECTS)
        || otsec_module_long(plus, "MAX_PENDING_CREATES", &MAX_PENDING_CREATES)
        || load_header_len(s7)
        || load_set(s7, "_NUMBERED_AREAS", NUMBERED_AREA)
        || load_set(s7, "_BIT_LENGTH_SIZES", BIT_LENGTH_SIZE)
        || load_set(s7, "_RC_WITH_DATA", RC_WITH_DATA)
        || load_set(s7, "_FILENAME_FUNCTIONS", FILENAME_FUNCTION)
        || load_set(s7, "_IDENTIFY_SZL", IDENTIFY_SZL)
        || load_set(s7, "CYCLIC_SUBSCRIBE", CYCLIC_SUBSCRIBE)
        || load_set(s7, "_TIS_VARIABLE_JOBS", TIS_JOB)
        || load_set(s7, "ALARM_SUBFUNCTIONS", ALARM_SUB)
        || load_set(s7, "_OWN_FRAGMENT_GROUPS", OWN_FRAGMENT_GROUP)
        || load_set(plus, "_FRAMED_TYPES", FRAMED_TYPE);
    Py_XDECREF(s7);
    Py_XDECREF(cotp);
    Py_XDECREF(plus);
    if (bad)
        return -1;
    /* the per-byte tuples are indexed without checks: they must have 256 / 16 entries */
    if (!PyTuple_Check(SYNTAX_NAMES) || PyTuple_GET_SIZE(SYNTAX_NAMES) != 256
        || !PyTuple_Check(AREA_INFO) || PyTuple_GET_SIZE(AREA_INFO) != 256
        || !PyTuple_Check(SIZE_INFO) || PyTuple_GET_SIZE(SIZE_INFO) != 256
        || !PyTuple_Check(RC_NAMES) || PyTuple_GET_SIZE(RC_NAMES) != 256
        || !PyTuple_Check(UD_TYPE_NAMES) || PyTuple_GET_SIZE(UD_TYPE_NAMES) != 16
        || !PyTuple_Check(UD_GROUP_NAMES) || PyTuple_GET_SIZE(UD_GROUP_NAMES) != 16
        || MAX_DETAIL_ITEMS > 256 || MAX_VALUE_BYTES > 256) {
        PyErr_SetString(PyExc_ValueError, "s7comm twin: unexpected lookup tables");
        return -1;
    }
    return 0;
}
