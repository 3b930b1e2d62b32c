/* The C twin of otsec/decoders/modbus.py decode() (see _cdecode.h for the contract).
 *
 * It covers every ADU the Python decoder decodes: the malformed (< 8 bytes) ADU, every
 * function code's request and response, exception responses, the exception bit in a
 * request, and the pending-request table (state) with its cap, whose context describes
 * responses. It answers NotImplemented only for inputs the flow layer never passes: a msg
 * that is not bytes, a state that is neither a dict nor None, or a pending entry that
 * decode() would not have written (then the Python decode handles them as it would).
 *
 * Every field parser mirrors its Python namesake and returns 0 (fields complete), 1 (the
 * PDU ended early: modbus.truncated_pdu, the fields read so far kept) or -1 (error).
 * Names, texts, limits and flags are read from the Python module at init.
 */
#define PY_SSIZE_T_CLEAN
#include "_cdecode.h"

#include <string.h>

#define MBAP 7                  /* header bytes before the function code (modbus.MBAP_LEN) */

/* --- what init reads from otsec.decoders.modbus ------------------------------------ */

enum {
    F_INVALID_LENGTH, F_TRUNCATED, F_OVERSIZED, F_PROTOCOL_ID, F_INVALID_VALUE,
    F_UNKNOWN_EXCEPTION, F_RESERVED, F_USER_DEFINED, F_UNASSIGNED, F_INVALID_FC, F_COUNT
};
static const char *const flag_attrs[F_COUNT] = {
    "A_INVALID_LENGTH", "A_TRUNCATED", "A_OVERSIZED", "A_PROTOCOL_ID", "A_INVALID_VALUE",
    "A_UNKNOWN_EXCEPTION", "A_RESERVED", "A_USER_DEFINED", "A_UNASSIGNED", "A_INVALID_FC",
};
static PyObject *flag_str[F_COUNT];

static struct {
    long mbap_len, length_spec_max, max_read_bits, max_read_registers, max_write_coils,
        max_write_registers, max_rw_write_registers, max_fifo_count, file_subreq_len,
        file_ref_type, file_read_max, file_write_min, file_write_max, coil_on, coil_off,
        max_detail_values, max_detail_raw, max_file_records, max_object_chars, min_id_text,
        max_pending, umas_fc, mei_fc, mei_device_id, umas_ok, umas_error, length_framed_min,
        length_tolerated_max, length_min;
} K;
static const struct { const char *name; long *slot; } int_attrs[] = {
    {"MBAP_LEN", &K.mbap_len}, {"LENGTH_SPEC_MAX", &K.length_spec_max},
    {"MAX_READ_BITS", &K.max_read_bits}, {"MAX_READ_REGISTERS", &K.max_read_registers},
    {"MAX_WRITE_COILS", &K.max_write_coils}, {"MAX_WRITE_REGISTERS", &K.max_write_registers},
    {"MAX_RW_WRITE_REGISTERS", &K.max_rw_write_registers},
    {"MAX_FIFO_COUNT", &K.max_fifo_count}, {"FILE_SUBREQ_LEN", &K.file_subreq_len},
    {"FILE_REF_TYPE", &K.file_ref_type}, {"FILE_READ_MAX", &K.file_read_max},
    {"FILE_WRITE_MIN", &K.file_write_min}, {"FILE_WRITE_MAX", &K.file_write_max},
    {"COIL_ON", &K.coil_on}, {"COIL_OFF", &K.coil_off},
    {"MAX_DETAIL_VALUES", &K.max_detail_values}, {"MAX_DETAIL_RAW", &K.max_detail_raw},
    {"MAX_FILE_RECORDS", &K.max_file_records}, {"MAX_OBJECT_CHARS", &K.max_object_chars},
    {"MIN_ID_TEXT", &K.min_id_text}, {"MAX_PENDING", &K.max_pending},
    {"UMAS_FC", &K.umas_fc}, {"MEI_FC", &K.mei_fc}, {"MEI_DEVICE_ID", &K.mei_device_id},
    {"UMAS_OK", &K.umas_ok}, {"UMAS_ERROR", &K.umas_error},
    {"LENGTH_FRAMED_MIN", &K.length_framed_min}, {"LENGTH_TOLERATED_MAX", &K.length_tolerated_max},
    {"LENGTH_MIN", &K.length_min},
};

static PyObject *diag_names, *diag_control;     /* DIAGNOSTIC_NAMES, DIAGNOSTIC_CONTROL */
/* Per header function code (exception bit cleared), from modbus._FC_INFO. */
static PyObject *fc_name[128], *fc_op[128], *fc_cat[128];
static signed char fc_flag[128];
/* Per byte value. */
static PyObject *exc_status[256];               /* an exception response's status text */
static char exc_known[256];                     /* code in EXCEPTION_NAMES */
static PyObject *umas_name[256], *umas_op[256]; /* modbus._umas(code) */
static PyObject *mei_name[256], *mei_op[256];
static char mei_known[256];
static PyObject *rdid_name[256];                /* READ_DEVICE_ID_CODES.get(code): None too */
static char rdid_known[256];
static PyObject *obj_name[256], *obj_key[256];  /* DEVICE_ID_OBJECTS (key NULL: none) */
static PyObject *malformed_function;            /* the function name of a too-short ADU */
static PyObject *umas_error_status;             /* the status of a UMAS error response */
static int enabled;                             /* the module has the shape this twin knows */

/* Strings that are field names and fixed values, not tables. */
enum {
    S_modbus, S_request, S_response, S_ok, S_exception, S_error, S_control, S_coil,
    S_discrete_input, S_holding_register, S_input_register, S_file_record, S_on, S_off,
    S_transaction_id, S_unit_id, S_category, S_raw_function_code, S_data, S_data_length,
    S_start, S_quantity, S_values, S_trailing_bytes, S_byte_count, S_sub_function,
    S_sub_function_name, S_records, S_reference_type, S_file, S_record, S_length, S_and_mask,
    S_or_mask, S_read_start, S_read_quantity, S_write_start, S_write_quantity, S_fifo_address,
    S_fifo_count, S_mei_type, S_mei, S_read_device_id, S_read_device_id_name, S_object_id,
    S_conformity_level, S_more_follows, S_next_object_id, S_number_of_objects, S_objects,
    S_umas_pairing_key, S_umas_code, S_umas_function, S_umas_status, S_exception_status,
    S_comm_status, S_event_count, S_message_count, S_events, S_server_id, S_run_indicator,
    S_text, S_exception_code, S_request_start, S_fc, S_op_class, S_other, S_COUNT
};
static const char *const str_text[S_COUNT] = {
    "modbus", "request", "response", "ok", "exception", "error", "control", "coil",
    "discrete_input", "holding_register", "input_register", "file_record", "on", "off",
    "transaction_id", "unit_id", "category", "raw_function_code", "data", "data_length",
    "start", "quantity", "values", "trailing_bytes", "byte_count", "sub_function",
    "sub_function_name", "records", "reference_type", "file", "record", "length", "and_mask",
    "or_mask", "read_start", "read_quantity", "write_start", "write_quantity", "fifo_address",
    "fifo_count", "mei_type", "mei", "read_device_id", "read_device_id_name", "object_id",
    "conformity_level", "more_follows", "next_object_id", "number_of_objects", "objects",
    "umas_pairing_key", "umas_code", "umas_function", "umas_status", "exception_status",
    "comm_status", "event_count", "message_count", "events", "server_id", "run_indicator",
    "text", "exception_code", "request_start", "fc", "op_class", "other",
};
static PyObject *S[S_COUNT];

/* The Event fields this twin passes positionally (model.Event's protocol half, in order). */
#define EVENT_NARGS 12

/* The function codes with a request / response parser of their own (the others are
 * opaque); init checks them against REQUEST_PARSERS and RESPONSE_PARSERS. */
static const int request_fcs[] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23,
                                  24, 43, 90};
static const int response_fcs[] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23,
                                   24, 43, 90};

/* --- one event under construction ------------------------------------------------- */

typedef struct {
    const unsigned char *d;     /* the PDU after the function code */
    Py_ssize_t n;
    int request;
    PyObject *detail;           /* new refs */
    PyObject *targets;
    PyObject *identity;         /* NULL: None */
    PyObject *op_class;         /* borrowed: module-lifetime or held by ctx */
    PyObject *result;           /* borrowed */
    PyObject *status;           /* borrowed; NULL: None */
    PyObject *ctx;              /* a request's pending context (new ref) or NULL */
    unsigned flag_seen;
    int nflags;
    unsigned char flags[F_COUNT];
} Ev;

/* The anomalies as decode() leaves them: in order, each once. */
static void
flag(Ev *ev, int f)
{
    if (!(ev->flag_seen & (1u << f))) {
        ev->flag_seen |= 1u << f;
        ev->flags[ev->nflags++] = (unsigned char)f;
    }
}

static int
set_obj(Ev *ev, int key, PyObject *value)
{
    return PyDict_SetItem(ev->detail, S[key], value);
}

/* Sets detail[key] to a new reference, stealing it. */
static int
set_new(Ev *ev, int key, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItem(ev->detail, S[key], value);
    Py_DECREF(value);
    return rc;
}

static int
set_int(Ev *ev, int key, long v)
{
    return set_new(ev, key, PyLong_FromLong(v));
}

static unsigned
u16(const unsigned char *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

/* Bytes [lo, hi) of the PDU as Python slices them (clamped to the PDU). */
static void
clamp(const Ev *ev, Py_ssize_t *lo, Py_ssize_t *hi)
{
    if (*hi > ev->n)
        *hi = ev->n;
    if (*lo > *hi)
        *lo = *hi;
}

/* modbus._hex of PDU bytes [lo, hi). */
static PyObject *
hex_of(const unsigned char *p, Py_ssize_t len)
{
    static const char digits[] = "0123456789abcdef";
    if (len > K.max_detail_raw)
        len = K.max_detail_raw;
    PyObject *s = PyUnicode_New(2 * len, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t i = 0; i < len; i++) {
        out[2 * i] = (Py_UCS1)digits[p[i] >> 4];
        out[2 * i + 1] = (Py_UCS1)digits[p[i] & 15];
    }
    return s;
}

static PyObject *
hex_range(const Ev *ev, Py_ssize_t lo, Py_ssize_t hi)
{
    clamp(ev, &lo, &hi);
    return hex_of(ev->d + lo, hi - lo);
}

/* modbus._words of PDU bytes [lo, hi). */
static PyObject *
words_range(const Ev *ev, Py_ssize_t lo, Py_ssize_t hi)
{
    clamp(ev, &lo, &hi);
    Py_ssize_t k = (hi - lo) >> 1;
    if (k > K.max_detail_values)
        k = K.max_detail_values;
    PyObject *list = PyList_New(k);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *v = PyLong_FromLong((long)u16(ev->d + lo + 2 * i));
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

/* modbus._bits of PDU bytes [lo, hi) limited to count bits. */
static PyObject *
bits_range(const Ev *ev, Py_ssize_t lo, Py_ssize_t hi, long count)
{
    clamp(ev, &lo, &hi);
    if (count > (hi - lo) * 8)
        count = (long)((hi - lo) * 8);
    if (count > K.max_detail_values)
        count = K.max_detail_values;
    PyObject *list = PyList_New(count);
    if (list == NULL)
        return NULL;
    for (long i = 0; i < count; i++)
        PyList_SET_ITEM(list, i, PyLong_FromLong((ev->d[lo + (i >> 3)] >> (i & 7)) & 1));
    return list;
}

/* Target(kind, start, count, None, None, name): start/count < 0 stand for None. */
static int
add_target(Ev *ev, int kind, long start, long count, PyObject *name)
{
    PyObject *args[6] = {S[kind], NULL, NULL, Py_None, Py_None, name ? name : Py_None};
    PyObject *t = NULL;
    args[1] = start < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(start);
    args[2] = count < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(count);
    if (args[1] && args[2])
        t = otsec_target_new(args, 6);
    Py_XDECREF(args[1]);
    Py_XDECREF(args[2]);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(ev->targets, t);
    Py_DECREF(t);
    return rc;
}

static int
ctx_set_int(Ev *ev, int key, long v)
{
    PyObject *o = PyLong_FromLong(v);
    if (o == NULL)
        return -1;
    int rc = PyDict_SetItem(ev->ctx, S[key], o);
    Py_DECREF(o);
    return rc;
}

/* modbus._exact: the fields ended at size; a longer PDU is flagged. */
static int
exact(Ev *ev, Py_ssize_t size)
{
    if (ev->n > size) {
        flag(ev, F_INVALID_LENGTH);
        return set_int(ev, S_trailing_bytes, (long)(ev->n - size));
    }
    return 0;
}

#define NEED(k) do { if (ev->n < (Py_ssize_t)(k)) return 1; } while (0)
#define TRY(x) do { if ((x) < 0) return -1; } while (0)

/* --- field parsers (requests and responses), named as in modbus.py ---------------- */

static int
p_opaque(Ev *ev)
{
    TRY(set_new(ev, S_data, hex_of(ev->d, ev->n)));
    return set_int(ev, S_data_length, (long)ev->n);
}

static int
p_no_data(Ev *ev)
{
    return exact(ev, 0);
}

/* FC 1-4 request: start, quantity within limit. */
static int
p_req_read(Ev *ev, int kind, long limit)
{
    NEED(2);
    long start = u16(ev->d);
    long qty = ev->n >= 4 ? (long)u16(ev->d + 2) : -1;
    TRY(set_int(ev, S_start, start));
    TRY(add_target(ev, kind, start, qty, NULL));
    TRY(ctx_set_int(ev, S_start, start));
    NEED(4);
    TRY(set_int(ev, S_quantity, qty));
    if (!(1 <= qty && qty <= limit))
        flag(ev, F_INVALID_LENGTH);
    return ev->n > 4 ? exact(ev, 4) : 0;
}

/* FC 5/6 request and echo. */
static int
p_write_single(Ev *ev, int kind)
{
    NEED(2);
    long start = u16(ev->d);
    TRY(set_int(ev, S_start, start));
    if (ev->request)
        TRY(add_target(ev, kind, start, 1, NULL));
    TRY(set_int(ev, S_quantity, 1));
    NEED(4);
    long value = u16(ev->d + 2);
    if (kind == S_coil) {
        if (value == K.coil_on)
            value = 1;
        else if (value == K.coil_off)
            value = 0;
        else
            flag(ev, F_INVALID_VALUE);
    }
    PyObject *list = PyList_New(1);
    if (list == NULL)
        return -1;
    PyObject *v = PyLong_FromLong(value);
    if (v == NULL) {
        Py_DECREF(list);
        return -1;
    }
    PyList_SET_ITEM(list, 0, v);
    TRY(set_new(ev, S_values, list));
    return ev->n > 4 ? exact(ev, 4) : 0;
}

/* modbus._written_values: byte count at `at`, then the values (bits of qty, or words). */
static int
written_values(Ev *ev, Py_ssize_t at, long expected, long bits_qty)
{
    NEED(at + 1);
    long count = ev->d[at];
    TRY(set_int(ev, S_byte_count, count));
    if (count != expected)
        flag(ev, F_INVALID_LENGTH);
    NEED(at + 1 + count);
    PyObject *values = bits_qty >= 0 ? bits_range(ev, at + 1, at + 1 + count, bits_qty)
                                     : words_range(ev, at + 1, at + 1 + count);
    TRY(set_new(ev, S_values, values));
    return exact(ev, at + 1 + count);
}

/* start (+ request target), then quantity: FC 15/16 requests and responses. */
static int
start_quantity(Ev *ev, int kind, long *qty)
{
    NEED(2);
    long start = u16(ev->d);
    *qty = ev->n >= 4 ? (long)u16(ev->d + 2) : -1;
    TRY(set_int(ev, S_start, start));
    if (ev->request)
        TRY(add_target(ev, kind, start, *qty, NULL));
    NEED(4);
    return set_int(ev, S_quantity, *qty);
}

static int
p_req_write_coils(Ev *ev)
{
    long qty;
    int rc = start_quantity(ev, S_coil, &qty);
    if (rc)
        return rc;
    if (!(1 <= qty && qty <= K.max_write_coils))
        flag(ev, F_INVALID_LENGTH);
    return written_values(ev, 4, (qty + 7) / 8, qty);
}

static int
p_req_write_registers(Ev *ev)
{
    long qty;
    int rc = start_quantity(ev, S_holding_register, &qty);
    if (rc)
        return rc;
    if (!(1 <= qty && qty <= K.max_write_registers))
        flag(ev, F_INVALID_LENGTH);
    return written_values(ev, 4, 2 * qty, -1);
}

static int
p_resp_write_multiple(Ev *ev, int kind)
{
    long qty;
    int rc = start_quantity(ev, kind, &qty);
    if (rc)
        return rc;
    return ev->n > 4 ? exact(ev, 4) : 0;
}

/* FC 8 request and response. */
static int
p_diagnostics(Ev *ev)
{
    NEED(2);
    long sub = u16(ev->d);
    TRY(set_int(ev, S_sub_function, sub));
    PyObject *key = PyLong_FromLong(sub);
    if (key == NULL)
        return -1;
    PyObject *name = PyDict_GetItemWithError(diag_names, key);
    int control = name == NULL && PyErr_Occurred() ? -1 : PySet_Contains(diag_control, key);
    Py_DECREF(key);
    if (control < 0)
        return -1;
    if (name != NULL)
        TRY(set_obj(ev, S_sub_function_name, name));
    else
        TRY(set_new(ev, S_sub_function_name, PyUnicode_FromFormat("Reserved (%ld)", sub)));
    if (control)
        ev->op_class = S[S_control];
    if ((ev->n - 2) % 2 == 0)
        return set_new(ev, S_data, words_range(ev, 2, ev->n));
    return set_new(ev, S_data, hex_range(ev, 2, ev->n));
}

/* A file sub-request's fields as a new dict (values: a list to add, stolen, or NULL). */
static PyObject *
file_record(const unsigned char *p, PyObject *values)
{
    PyObject *rec = PyDict_New();
    PyObject *v[4] = {PyLong_FromLong(p[0]), PyLong_FromLong((long)u16(p + 1)),
                      PyLong_FromLong((long)u16(p + 3)), PyLong_FromLong((long)u16(p + 5))};
    static const int keys[4] = {S_reference_type, S_file, S_record, S_length};
    int ok = rec != NULL && v[1] && v[2] && v[3];
    for (int i = 0; i < 4; i++) {
        if (ok && PyDict_SetItem(rec, S[keys[i]], v[i]) < 0)
            ok = 0;
        Py_XDECREF(v[i]);
    }
    if (ok && values != NULL && PyDict_SetItem(rec, S[S_values], values) < 0)
        ok = 0;
    Py_XDECREF(values);
    if (!ok) {
        Py_XDECREF(rec);
        return NULL;
    }
    return rec;
}

static int
file_target(Ev *ev, const unsigned char *p)
{
    PyObject *name = PyUnicode_FromFormat("file:%u", u16(p + 1));
    if (name == NULL)
        return -1;
    int rc = add_target(ev, S_file_record, (long)u16(p + 3), (long)u16(p + 5), name);
    Py_DECREF(name);
    return rc;
}

static int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* FC 20 request: byte count, then 7-byte sub-requests. */
static int
p_req_read_file(Ev *ev)
{
    const long sub = K.file_subreq_len;
    NEED(1);
    long count = ev->d[0];
    TRY(set_int(ev, S_byte_count, count));
    if (count % sub || !(sub <= count && count <= K.file_read_max))
        flag(ev, F_INVALID_LENGTH);
    NEED(1 + count);
    PyObject *records = PyList_New(0);
    if (records == NULL)
        return -1;
    for (long off = 1; off < 1 + count - sub + 1; off += sub) {
        const unsigned char *p = ev->d + off;
        if (PyList_GET_SIZE(records) < K.max_file_records) {
            if (append_new(records, file_record(p, NULL)) < 0 || file_target(ev, p) < 0) {
                Py_DECREF(records);
                return -1;
            }
        }
        if (p[0] != K.file_ref_type)
            flag(ev, F_INVALID_VALUE);
    }
    TRY(set_new(ev, S_records, records));
    return exact(ev, 1 + count);
}

/* FC 21 request and echo: records with their data words. */
static int
p_write_file(Ev *ev)
{
    const long sub = K.file_subreq_len;
    NEED(1);
    long count = ev->d[0];
    TRY(set_int(ev, S_byte_count, count));
    if (!(K.file_write_min <= count && count <= K.file_write_max))
        flag(ev, F_INVALID_LENGTH);
    PyObject *records = PyList_New(0);
    if (records == NULL)
        return -1;
    Py_ssize_t off = 1, end = 1 + count;
    int rc = 0;
    while (off < end) {
        if (ev->n < off + sub) {
            rc = 1;
            break;
        }
        const unsigned char *p = ev->d + off;
        long length = u16(p + 5);
        if (ev->n < off + sub + 2 * length) {
            rc = 1;
            break;
        }
        if (PyList_GET_SIZE(records) < K.max_file_records) {
            PyObject *values = words_range(ev, off + sub, off + sub + 2 * length);
            if (values == NULL || append_new(records, file_record(p, values)) < 0
                || (ev->request && file_target(ev, p) < 0)) {
                rc = -1;
                break;
            }
        }
        if (p[0] != K.file_ref_type)
            flag(ev, F_INVALID_VALUE);
        off += sub + 2 * length;
    }
    if (rc) {
        Py_DECREF(records);
        return rc;
    }
    TRY(set_new(ev, S_records, records));
    if (off != end)
        flag(ev, F_INVALID_LENGTH);
    return exact(ev, end);
}

/* FC 22 request and echo. */
static int
p_mask_write(Ev *ev)
{
    NEED(2);
    long start = u16(ev->d);
    TRY(set_int(ev, S_start, start));
    if (ev->request)
        TRY(add_target(ev, S_holding_register, start, 1, NULL));
    NEED(6);
    TRY(set_int(ev, S_and_mask, (long)u16(ev->d + 2)));
    TRY(set_int(ev, S_or_mask, (long)u16(ev->d + 4)));
    return exact(ev, 6);
}

/* FC 23 request: read range, write range, then the written words. */
static int
p_req_read_write(Ev *ev)
{
    NEED(8);
    long rstart = u16(ev->d), rqty = u16(ev->d + 2);
    long wstart = u16(ev->d + 4), wqty = u16(ev->d + 6);
    TRY(set_int(ev, S_read_start, rstart));
    TRY(set_int(ev, S_read_quantity, rqty));
    TRY(set_int(ev, S_write_start, wstart));
    TRY(set_int(ev, S_write_quantity, wqty));
    TRY(add_target(ev, S_holding_register, rstart, rqty, NULL));
    TRY(add_target(ev, S_holding_register, wstart, wqty, NULL));
    TRY(ctx_set_int(ev, S_start, rstart));
    if (!(1 <= rqty && rqty <= K.max_read_registers))
        flag(ev, F_INVALID_LENGTH);
    if (!(1 <= wqty && wqty <= K.max_rw_write_registers))
        flag(ev, F_INVALID_LENGTH);
    return written_values(ev, 8, 2 * wqty, -1);
}

static int
p_req_fifo(Ev *ev)
{
    NEED(2);
    long addr = u16(ev->d);
    TRY(set_int(ev, S_fifo_address, addr));
    TRY(add_target(ev, S_holding_register, addr, -1, NULL));
    return exact(ev, 2);
}

/* modbus._mei_common: MEI type, its name and op class. */
static int
mei_common(Ev *ev, int mei)
{
    TRY(set_int(ev, S_mei_type, mei));
    TRY(set_obj(ev, S_mei, mei_name[mei]));
    ev->op_class = mei_op[mei];
    if (!mei_known[mei])
        flag(ev, F_RESERVED);
    return 0;
}

static int
p_req_mei(Ev *ev)
{
    NEED(1);
    int mei = ev->d[0];
    TRY(mei_common(ev, mei));
    if (mei != K.mei_device_id)
        return set_new(ev, S_data, hex_range(ev, 1, ev->n));
    NEED(3);
    int code = ev->d[1];
    TRY(set_int(ev, S_read_device_id, code));
    TRY(set_obj(ev, S_read_device_id_name, rdid_name[code]));
    TRY(set_int(ev, S_object_id, ev->d[2]));
    if (!rdid_known[code])
        flag(ev, F_INVALID_VALUE);
    return exact(ev, 3);
}

static int
p_umas_request(Ev *ev)
{
    NEED(2);
    int code = ev->d[1];
    ev->op_class = umas_op[code];
    TRY(set_int(ev, S_umas_pairing_key, ev->d[0]));
    TRY(set_int(ev, S_umas_code, code));
    TRY(set_obj(ev, S_umas_function, umas_name[code]));
    TRY(set_new(ev, S_data, hex_range(ev, 2, ev->n)));
    return ctx_set_int(ev, S_umas_code, code);
}

static int
p_resp_bits(Ev *ev)
{
    NEED(1);
    long count = ev->d[0];
    TRY(set_int(ev, S_byte_count, count));
    if (!(1 <= count && count <= (K.max_read_bits + 7) / 8))
        flag(ev, F_INVALID_LENGTH);
    NEED(1 + count);
    TRY(set_new(ev, S_values, bits_range(ev, 1, 1 + count, count * 8)));
    return ev->n > 1 + count ? exact(ev, 1 + count) : 0;
}

static int
p_resp_registers(Ev *ev)
{
    NEED(1);
    long count = ev->d[0];
    TRY(set_int(ev, S_byte_count, count));
    if (count % 2 || !(2 <= count && count <= 2 * K.max_read_registers))
        flag(ev, F_INVALID_LENGTH);
    NEED(1 + count);
    TRY(set_new(ev, S_values, words_range(ev, 1, 1 + count)));
    return ev->n > 1 + count ? exact(ev, 1 + count) : 0;
}

static int
p_resp_exception_status(Ev *ev)
{
    NEED(1);
    TRY(set_int(ev, S_exception_status, ev->d[0]));
    return exact(ev, 1);
}

static int
p_resp_event_counter(Ev *ev)
{
    NEED(4);
    TRY(set_int(ev, S_comm_status, (long)u16(ev->d)));
    TRY(set_int(ev, S_event_count, (long)u16(ev->d + 2)));
    return exact(ev, 4);
}

static int
p_resp_event_log(Ev *ev)
{
    NEED(7);
    long count = ev->d[0];
    TRY(set_int(ev, S_byte_count, count));
    TRY(set_int(ev, S_comm_status, (long)u16(ev->d + 1)));
    TRY(set_int(ev, S_event_count, (long)u16(ev->d + 3)));
    TRY(set_int(ev, S_message_count, (long)u16(ev->d + 5)));
    if (count < 6)
        flag(ev, F_INVALID_LENGTH);
    NEED(1 + count);
    TRY(set_new(ev, S_events, hex_range(ev, 7, 1 + count)));
    return exact(ev, 1 + count);
}

/* FC 17 response: server id, run indicator, printable text (identity when long enough). */
static int
p_resp_server_id(Ev *ev)
{
    NEED(1);
    long count = ev->d[0];
    TRY(set_int(ev, S_byte_count, count));
    if (count == 0)
        flag(ev, F_INVALID_LENGTH);
    NEED(1 + count);
    if (count == 0)
        return 1;
    const unsigned char *body = ev->d + 1;
    TRY(set_int(ev, S_server_id, body[0]));
    TRY(set_new(ev, S_data, hex_of(body, count)));
    if (count >= 2 && (body[1] == 0x00 || body[1] == 0xFF))
        TRY(set_obj(ev, S_run_indicator, S[body[1] == 0xFF ? S_on : S_off]));
    char text[256];
    long len = 0;
    for (long i = 0; i < count && len < K.max_object_chars; i++)
        if (body[i] >= 32 && body[i] < 127)
            text[len++] = (char)body[i];
    long lo = 0;
    while (lo < len && text[lo] == ' ')
        lo++;
    while (len > lo && text[len - 1] == ' ')
        len--;
    if (len - lo >= K.min_id_text) {
        PyObject *s = PyUnicode_DecodeASCII(text + lo, len - lo, NULL);
        if (s == NULL)
            return -1;
        if (set_obj(ev, S_text, s) < 0 || (ev->identity = PyDict_New()) == NULL
            || PyDict_SetItem(ev->identity, S[S_server_id], s) < 0) {
            Py_DECREF(s);
            return -1;
        }
        Py_DECREF(s);
    }
    return exact(ev, 1 + count);
}

/* FC 20 response: per record a length, a reference type and words. */
static int
p_resp_read_file(Ev *ev)
{
    NEED(1);
    long count = ev->d[0];
    TRY(set_int(ev, S_byte_count, count));
    PyObject *records = PyList_New(0);
    if (records == NULL)
        return -1;
    Py_ssize_t off = 1, end = 1 + count;
    int rc = 0;
    while (off < end) {
        if (ev->n < off + 2) {
            rc = 1;
            break;
        }
        long length = ev->d[off], ref = ev->d[off + 1];
        if (length >= 1 && ev->n < off + 1 + length) {
            rc = 1;
            break;
        }
        if (PyList_GET_SIZE(records) < K.max_file_records) {
            PyObject *rec = PyDict_New();
            PyObject *r = PyLong_FromLong(ref);
            PyObject *values = words_range(ev, off + 2, off + 1 + length);
            int ok = rec && r && values && PyDict_SetItem(rec, S[S_reference_type], r) == 0
                     && PyDict_SetItem(rec, S[S_values], values) == 0;
            Py_XDECREF(r);
            Py_XDECREF(values);
            if (!ok || append_new(records, rec) < 0) {
                if (!ok)
                    Py_XDECREF(rec);
                rc = -1;
                break;
            }
        }
        if (length < 1 || (length - 1) % 2)
            flag(ev, F_INVALID_LENGTH);
        if (ref != K.file_ref_type)
            flag(ev, F_INVALID_VALUE);
        off += 1 + (length > 1 ? length : 1);
    }
    if (rc) {
        Py_DECREF(records);
        return rc;
    }
    TRY(set_new(ev, S_records, records));
    if (off != end)
        flag(ev, F_INVALID_LENGTH);
    return exact(ev, end);
}

static int
p_resp_fifo(Ev *ev)
{
    NEED(4);
    long count = u16(ev->d), fifo = u16(ev->d + 2);
    TRY(set_int(ev, S_byte_count, count));
    TRY(set_int(ev, S_fifo_count, fifo));
    if (fifo > K.max_fifo_count || count != 2 + 2 * fifo)
        flag(ev, F_INVALID_LENGTH);
    NEED(2 + count);
    TRY(set_new(ev, S_values, words_range(ev, 4, 2 + count)));
    return exact(ev, 2 + count);
}

/* modbus._text: latin-1, NULs dropped, whitespace stripped. */
static PyObject *
object_text(const unsigned char *raw, long len)
{
    Py_UCS1 buf[256];
    long k = 0;
    if (len > K.max_object_chars)
        len = K.max_object_chars;
    for (long i = 0; i < len; i++)
        if (raw[i])
            buf[k++] = raw[i];
    long lo = 0;
    while (lo < k && Py_UNICODE_ISSPACE(buf[lo]))
        lo++;
    while (k > lo && Py_UNICODE_ISSPACE(buf[k - 1]))
        k--;
    return PyUnicode_DecodeLatin1((const char *)buf + lo, k - lo, NULL);
}

/* FC 43 response: MEI; for 14 the device-identification objects (identity). */
static int
p_resp_mei(Ev *ev)
{
    NEED(1);
    int mei = ev->d[0];
    TRY(mei_common(ev, mei));
    if (mei != K.mei_device_id)
        return set_new(ev, S_data, hex_range(ev, 1, ev->n));
    NEED(6);
    const unsigned char *h = ev->d + 1;
    TRY(set_int(ev, S_read_device_id, h[0]));
    TRY(set_obj(ev, S_read_device_id_name, rdid_name[h[0]]));
    TRY(set_int(ev, S_conformity_level, h[1]));
    TRY(set_int(ev, S_more_follows, h[2]));
    TRY(set_int(ev, S_next_object_id, h[3]));
    TRY(set_int(ev, S_number_of_objects, h[4]));
    PyObject *objects = PyDict_New();
    if (objects == NULL)
        return -1;
    TRY(set_new(ev, S_objects, objects));
    PyObject *identity = PyDict_New();
    if (identity == NULL)
        return -1;
    Py_ssize_t off = 6;
    int rc = 0;
    for (int i = 0; i < h[4]; i++) {
        if (ev->n < off + 2) {
            rc = 1;
            break;
        }
        int obj = ev->d[off];
        long length = ev->d[off + 1];
        if (ev->n < off + 2 + length) {
            rc = 1;
            break;
        }
        PyObject *text = object_text(ev->d + off + 2, length);
        if (text == NULL || PyDict_SetItem(objects, obj_name[obj], text) < 0
            || (obj_key[obj] && PyDict_SetItem(identity, obj_key[obj], text) < 0)) {
            Py_XDECREF(text);
            rc = -1;
            break;
        }
        Py_DECREF(text);
        off += 2 + length;
    }
    if (rc == 0 && PyDict_GET_SIZE(identity))
        ev->identity = Py_NewRef(identity);
    Py_DECREF(identity);
    return rc ? rc : exact(ev, off);
}

static int
p_umas_response(Ev *ev)
{
    NEED(2);
    int status = ev->d[1];
    TRY(set_int(ev, S_umas_pairing_key, ev->d[0]));
    TRY(set_int(ev, S_umas_status, status));
    TRY(set_new(ev, S_data, hex_range(ev, 2, ev->n)));
    if (status == K.umas_error) {
        ev->result = S[S_error];
        ev->status = umas_error_status;
    }
    else if (status != K.umas_ok)
        flag(ev, F_INVALID_VALUE);
    return 0;
}

static int
p_exception(Ev *ev)
{
    ev->result = S[S_exception];
    NEED(1);
    int code = ev->d[0];
    ev->status = exc_status[code];
    TRY(set_int(ev, S_exception_code, code));
    if (!exc_known[code])
        flag(ev, F_UNKNOWN_EXCEPTION);
    return exact(ev, 1);
}

static int
parse_request(Ev *ev, int fc)
{
    switch (fc) {
    case 1: return p_req_read(ev, S_coil, K.max_read_bits);
    case 2: return p_req_read(ev, S_discrete_input, K.max_read_bits);
    case 3: return p_req_read(ev, S_holding_register, K.max_read_registers);
    case 4: return p_req_read(ev, S_input_register, K.max_read_registers);
    case 5: return p_write_single(ev, S_coil);
    case 6: return p_write_single(ev, S_holding_register);
    case 7: case 11: case 12: case 17: return p_no_data(ev);
    case 8: return p_diagnostics(ev);
    case 15: return p_req_write_coils(ev);
    case 16: return p_req_write_registers(ev);
    case 20: return p_req_read_file(ev);
    case 21: return p_write_file(ev);
    case 22: return p_mask_write(ev);
    case 23: return p_req_read_write(ev);
    case 24: return p_req_fifo(ev);
    case 43: return p_req_mei(ev);
    case 90: return p_umas_request(ev);
    default: return p_opaque(ev);
    }
}

static int
parse_response(Ev *ev, int fc)
{
    switch (fc) {
    case 1: case 2: return p_resp_bits(ev);
    case 3: case 4: case 23: return p_resp_registers(ev);
    case 5: return p_write_single(ev, S_coil);
    case 6: return p_write_single(ev, S_holding_register);
    case 7: return p_resp_exception_status(ev);
    case 8: return p_diagnostics(ev);
    case 11: return p_resp_event_counter(ev);
    case 12: return p_resp_event_log(ev);
    case 15: return p_resp_write_multiple(ev, S_coil);
    case 16: return p_resp_write_multiple(ev, S_holding_register);
    case 17: return p_resp_server_id(ev);
    case 20: return p_resp_read_file(ev);
    case 21: return p_write_file(ev);
    case 22: return p_mask_write(ev);
    case 24: return p_resp_fifo(ev);
    case 43: return p_resp_mei(ev);
    case 90: return p_umas_response(ev);
    default: return p_opaque(ev);
    }
}

/* --- decode ------------------------------------------------------------------------- */

/* A pending request's context as decode() writes it ({start?, umas_code?, fc, op_class}),
 * or -1: anything else, left to the Python decode. Sets *fc_out, *op_out (borrowed). */
static int
check_ctx(PyObject *ctx, long *fc_out, PyObject **op_out)
{
    if (!PyDict_CheckExact(ctx))
        return -1;
    PyObject *fc = PyDict_GetItemWithError(ctx, S[S_fc]);
    if (fc == NULL || !PyLong_CheckExact(fc))
        return -1;
    int overflow = 0;
    *fc_out = PyLong_AsLongAndOverflow(fc, &overflow);
    if (overflow || (*fc_out == -1 && PyErr_Occurred()))
        return -1;
    *op_out = PyDict_GetItemWithError(ctx, S[S_op_class]);
    if (*op_out == NULL)
        return -1;
    PyObject *code = PyDict_GetItemWithError(ctx, S[S_umas_code]);
    if (code != NULL) {
        long c = PyLong_CheckExact(code) ? PyLong_AsLongAndOverflow(code, &overflow) : -1;
        if (overflow || c < 0 || c > 255)
            return -1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* modbus._apply_request_context. */
static int
apply_context(Ev *ev, PyObject *ctx, PyObject *op_class)
{
    ev->op_class = op_class;
    PyObject *code = PyDict_GetItemWithError(ctx, S[S_umas_code]);
    if (code != NULL) {
        TRY(set_obj(ev, S_umas_code, code));
        TRY(set_obj(ev, S_umas_function, umas_name[PyLong_AsLong(code)]));
    }
    PyObject *start = PyDict_GetItemWithError(ctx, S[S_start]);
    if (start != NULL)
        TRY(set_obj(ev, S_request_start, start));
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *
make_event(Ev *ev, PyObject *kind, PyObject *function, PyObject *fc, PyObject *pair_key)
{
    PyObject *anomalies = PyList_New(ev->nflags);
    if (anomalies == NULL)
        return NULL;
    for (int i = 0; i < ev->nflags; i++)
        PyList_SET_ITEM(anomalies, i, Py_NewRef(flag_str[ev->flags[i]]));
    PyObject *args[EVENT_NARGS] = {
        S[S_modbus], kind, function, ev->op_class, fc, ev->targets,
        ev->result ? ev->result : Py_None, ev->status ? ev->status : Py_None, anomalies,
        ev->detail, ev->identity ? ev->identity : Py_None, pair_key,
    };
    PyObject *event = otsec_event_new(args, EVENT_NARGS);
    Py_DECREF(anomalies);
    return otsec_one_event(event);
}

/* The ADU too short for a function code. */
static PyObject *
decode_malformed(const unsigned char *msg, Py_ssize_t size, int from_client)
{
    Ev ev = {.op_class = NULL};
    PyObject *out = NULL;
    ev.detail = PyDict_New();
    ev.targets = PyList_New(0);
    if (ev.detail == NULL || ev.targets == NULL)
        goto done;
    if (set_new(&ev, S_data, hex_of(msg, size)) < 0)
        goto done;
    flag(&ev, F_TRUNCATED);
    ev.flags[ev.nflags++] = F_INVALID_LENGTH;   /* as listed, never deduplicated */
    ev.op_class = S[S_other];
    ev.result = from_client ? NULL : S[S_error];
    out = make_event(&ev, S[from_client ? S_request : S_response], malformed_function, Py_None,
                     Py_None);
done:
    Py_XDECREF(ev.detail);
    Py_XDECREF(ev.targets);
    return out;
}

PyObject *
otsec_modbus_decode(PyObject *msg, int from_client, PyObject *state)
{
    if (!enabled || !PyBytes_CheckExact(msg) || (state != Py_None && !PyDict_CheckExact(state)))
        Py_RETURN_NOTIMPLEMENTED;
    if (state == Py_None)
        state = NULL;
    const unsigned char *m = (const unsigned char *)PyBytes_AS_STRING(msg);
    Py_ssize_t size = PyBytes_GET_SIZE(msg);
    if (size < MBAP + 1)
        return decode_malformed(m, size, from_client);

    long tid = u16(m), proto = u16(m + 2), length = u16(m + 4);
    int unit = m[6], raw_fc = m[7], fc = raw_fc & 0x7F;
    PyObject *pair_key = Py_BuildValue("(li)", tid, unit);
    if (pair_key == NULL)
        return NULL;

    /* A response's pending request, checked before anything changes. */
    PyObject *ctx = NULL, *ctx_op = NULL;
    long ctx_fc = -1;
    if (!from_client && state != NULL) {
        ctx = PyDict_GetItemWithError(state, pair_key);
        if (ctx == NULL && PyErr_Occurred()) {
            Py_DECREF(pair_key);
            return NULL;
        }
        if (ctx != NULL && check_ctx(ctx, &ctx_fc, &ctx_op) < 0) {
            Py_DECREF(pair_key);
            if (PyErr_Occurred())
                PyErr_Clear();
            Py_RETURN_NOTIMPLEMENTED;
        }
        Py_XINCREF(ctx);
    }

    Ev ev = {.d = m + MBAP + 1, .n = size - MBAP - 1, .request = from_client};
    PyObject *out = NULL, *fc_obj = NULL;
    ev.op_class = fc_op[fc];
    ev.result = from_client ? NULL : S[S_ok];
    if (fc_flag[fc] >= 0)
        flag(&ev, fc_flag[fc]);
    if (proto != 0)
        flag(&ev, F_PROTOCOL_ID);
    if (length != size - 6)
        flag(&ev, F_INVALID_LENGTH);
    if (length > K.length_spec_max)
        flag(&ev, F_OVERSIZED);
    ev.detail = PyDict_New();
    ev.targets = PyList_New(0);
    fc_obj = PyLong_FromLong(fc);
    if (ev.detail == NULL || ev.targets == NULL || fc_obj == NULL
        || set_int(&ev, S_transaction_id, tid) < 0 || set_int(&ev, S_unit_id, unit) < 0
        || set_obj(&ev, S_category, fc_cat[fc]) < 0)
        goto done;

    int rc;
    if (from_client) {
        if (raw_fc & 0x80) {
            if (set_int(&ev, S_raw_function_code, raw_fc) < 0)
                goto done;
            flag(&ev, F_INVALID_FC);
            rc = p_opaque(&ev);
        }
        else {
            if ((ev.ctx = PyDict_New()) == NULL)
                goto done;
            rc = parse_request(&ev, fc);
        }
    }
    else {
        if (ctx != NULL && ctx_fc == fc && apply_context(&ev, ctx, ctx_op) < 0)
            goto done;
        if (raw_fc & 0x80) {
            if (set_int(&ev, S_raw_function_code, raw_fc) < 0)
                goto done;
            rc = p_exception(&ev);
        }
        else
            rc = parse_response(&ev, fc);
    }
    if (rc < 0)
        goto done;
    if (rc > 0)
        flag(&ev, F_TRUNCATED);
    out = make_event(&ev, S[from_client ? S_request : S_response], fc_name[fc], fc_obj, pair_key);
    if (out == NULL)
        goto done;

    /* The pending-request table, changed as decode() changes it. */
    if (state != NULL && (ev.ctx != NULL || !from_client)) {
        int st = 0;
        if (PyDict_Contains(state, pair_key) == 1)
            st = PyDict_DelItem(state, pair_key);
        if (ev.ctx != NULL && st == 0) {
            if (PyDict_GET_SIZE(state) >= K.max_pending)
                st = otsec_drop_oldest(state);
            if (st == 0)
                st = PyDict_SetItem(ev.ctx, S[S_fc], fc_obj);
            if (st == 0)
                st = PyDict_SetItem(ev.ctx, S[S_op_class], ev.op_class);
            if (st == 0)
                st = PyDict_SetItem(state, pair_key, ev.ctx);
        }
        if (st < 0 || PyErr_Occurred())
            Py_CLEAR(out);
    }
done:
    Py_XDECREF(ev.detail);
    Py_XDECREF(ev.targets);
    Py_XDECREF(ev.identity);
    Py_XDECREF(ev.ctx);
    Py_XDECREF(ctx);
    Py_XDECREF(fc_obj);
    Py_DECREF(pair_key);
    return out;
}

/* --- init ------------------------------------------------------------------------------ */

static PyObject *
get_attr(PyObject *mod, const char *name)
{
    return PyObject_GetAttrString(mod, name);
}

/* d.get(key) for an int key: a new reference, or NULL (absent or error). */
static PyObject *
get_int_key(PyObject *d, long key)
{
    PyObject *k = PyLong_FromLong(key);
    if (k == NULL)
        return NULL;
    PyObject *v = PyDict_GetItemWithError(d, k);
    Py_DECREF(k);
    Py_XINCREF(v);
    return v;
}

/* The dict's keys are exactly the codes given. */
static int
keys_are(PyObject *d, const int *codes, int count)
{
    if (!PyDict_Check(d) || PyDict_GET_SIZE(d) != count)
        return 0;
    for (int i = 0; i < count; i++) {
        PyObject *v = get_int_key(d, codes[i]);
        if (v == NULL)
            return 0;
        Py_DECREF(v);
    }
    return 1;
}

/* A field of the one event the Python decode makes of msg (new reference). */
static PyObject *
python_field(PyObject *decode, const char *msg, Py_ssize_t len, int from_client, const char *f)
{
    PyObject *events = PyObject_CallFunction(decode, "y#OO", msg, len,
                                             from_client ? Py_True : Py_False, Py_None);
    if (events == NULL)
        return NULL;
    PyObject *out = NULL;
    if (PyList_Check(events) && PyList_GET_SIZE(events) == 1)
        out = PyObject_GetAttrString(PyList_GET_ITEM(events, 0), f);
    else
        PyErr_SetString(PyExc_ImportError, "modbus.decode did not give one event");
    Py_DECREF(events);
    return out;
}

static int
init_tables(PyObject *mod)
{
    for (size_t i = 0; i < sizeof int_attrs / sizeof int_attrs[0]; i++) {
        PyObject *v = get_attr(mod, int_attrs[i].name);
        if (v == NULL)
            return -1;
        *int_attrs[i].slot = PyLong_AsLong(v);
        Py_DECREF(v);
        if (PyErr_Occurred())
            return -1;
    }
    for (int f = 0; f < F_COUNT; f++)
        if ((flag_str[f] = get_attr(mod, flag_attrs[f])) == NULL)
            return -1;
    if ((diag_names = get_attr(mod, "DIAGNOSTIC_NAMES")) == NULL
        || (diag_control = get_attr(mod, "DIAGNOSTIC_CONTROL")) == NULL)
        return -1;

    PyObject *info = get_attr(mod, "_FC_INFO");
    if (info == NULL)
        return -1;
    int ok = PyTuple_Check(info) && PyTuple_GET_SIZE(info) == 128;
    for (int fc = 0; ok && fc < 128; fc++) {
        PyObject *row = PyTuple_GET_ITEM(info, fc);
        ok = PyTuple_Check(row) && PyTuple_GET_SIZE(row) == 4;
        if (!ok)
            break;
        fc_name[fc] = Py_NewRef(PyTuple_GET_ITEM(row, 0));
        fc_op[fc] = Py_NewRef(PyTuple_GET_ITEM(row, 1));
        fc_cat[fc] = Py_NewRef(PyTuple_GET_ITEM(row, 2));
        PyObject *f = PyTuple_GET_ITEM(row, 3);
        fc_flag[fc] = -1;
        for (int i = 0; f != Py_None && i < F_COUNT; i++)
            if (PyObject_RichCompareBool(f, flag_str[i], Py_EQ) == 1)
                fc_flag[fc] = (signed char)i;
        ok = f == Py_None || fc_flag[fc] >= 0;
    }
    Py_DECREF(info);
    if (!ok) {
        PyErr_SetString(PyExc_ImportError, "modbus._FC_INFO has an unexpected shape");
        return -1;
    }

    PyObject *umas = get_attr(mod, "_umas"), *decode = get_attr(mod, "decode");
    PyObject *mei_names = get_attr(mod, "MEI_NAMES"), *mei_ops = get_attr(mod, "MEI_OP_CLASS");
    PyObject *rdid = get_attr(mod, "READ_DEVICE_ID_CODES");
    PyObject *objs = get_attr(mod, "DEVICE_ID_OBJECTS");
    PyObject *excs = get_attr(mod, "EXCEPTION_NAMES");
    PyObject *reqp = get_attr(mod, "REQUEST_PARSERS"), *respp = get_attr(mod, "RESPONSE_PARSERS");
    ok = umas && decode && mei_names && mei_ops && rdid && objs && excs && reqp && respp
         && PyDict_Check(mei_names) && PyDict_Check(mei_ops) && PyDict_Check(rdid)
         && PyDict_Check(objs) && PyDict_Check(excs) && PyDict_Check(diag_names);
    for (int b = 0; ok && b < 256; b++) {
        PyObject *pair = PyObject_CallFunction(umas, "i", b);
        ok = pair != NULL && PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2;
        if (ok) {
            umas_name[b] = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
            umas_op[b] = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
        }
        Py_XDECREF(pair);
        if (!ok)
            break;
        /* An exception response's status, as decode() words it. */
        const char adu[] = {0, 0, 0, 0, 0, 3, 1, (char)0x81, (char)b};
        ok = (exc_status[b] = python_field(decode, adu, sizeof adu, 0, "status")) != NULL;
        PyObject *v = ok ? get_int_key(excs, b) : NULL;
        exc_known[b] = v != NULL;
        Py_XDECREF(v);

        mei_known[b] = (v = get_int_key(mei_names, b)) != NULL;
        mei_name[b] = v ? v : PyUnicode_FromFormat("Reserved (%d)", b);
        v = get_int_key(mei_ops, b);
        mei_op[b] = v ? v : Py_NewRef(S[S_other]);
        rdid_known[b] = (v = get_int_key(rdid, b)) != NULL;
        rdid_name[b] = v ? v : Py_NewRef(Py_None);
        v = get_int_key(objs, b);
        if (v != NULL && PyTuple_Check(v) && PyTuple_GET_SIZE(v) == 2) {
            obj_name[b] = Py_NewRef(PyTuple_GET_ITEM(v, 0));
            obj_key[b] = PyTuple_GET_ITEM(v, 1) == Py_None ? NULL
                                                          : Py_NewRef(PyTuple_GET_ITEM(v, 1));
        }
        else if (v == NULL)
            obj_name[b] = PyUnicode_FromFormat("object_%d", b);
        Py_XDECREF(v);
        ok = ok && mei_name[b] && mei_op[b] && obj_name[b] && !PyErr_Occurred();
    }
    if (ok) {
        const char too_short[] = {0};
        const char umas_error[] = {0, 0, 0, 0, 0, 4, 1, 90, 0, (char)K.umas_error};
        ok = (malformed_function = python_field(decode, too_short, 0, 1, "function")) != NULL
             && (umas_error_status = python_field(decode, umas_error, sizeof umas_error, 0,
                                                  "status")) != NULL;
    }
    /* The twin knows these parsers; a module that grew others is left to Python. */
    enabled = ok && K.mbap_len == MBAP && K.max_detail_raw <= 128 && K.max_object_chars <= 255
              && keys_are(reqp, request_fcs, sizeof request_fcs / sizeof request_fcs[0])
              && keys_are(respp, response_fcs, sizeof response_fcs / sizeof response_fcs[0])
              && K.umas_fc == 90 && K.mei_fc == 43;
    if (PyErr_Occurred() && ok)
        PyErr_Clear();
    Py_XDECREF(umas);
    Py_XDECREF(decode);
    Py_XDECREF(mei_names);
    Py_XDECREF(mei_ops);
    Py_XDECREF(rdid);
    Py_XDECREF(objs);
    Py_XDECREF(excs);
    Py_XDECREF(reqp);
    Py_XDECREF(respp);
    if (!ok && !PyErr_Occurred())
        PyErr_SetString(PyExc_ImportError, "otsec.decoders.modbus has an unexpected shape");
    return ok ? 0 : -1;
}

/* The twin of modbus.frame (the reference): 6 + the length field when the protocol id is 0
 * and the length plausible; NEED_MORE is 0, UNFRAMEABLE -1. */
Py_ssize_t
otsec_modbus_frame(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
{
    Py_ssize_t avail = len - pos;
    if (avail < 4)
        return 0;
    if (buf[pos + 2] || buf[pos + 3])
        return -1;
    if (avail < 6)
        return 0;
    long length = (buf[pos + 4] << 8) | buf[pos + 5];
    if (length < K.length_framed_min || length > K.length_tolerated_max)
        return -1;
    return avail >= 6 + length ? 6 + length : 0;
}

/* The twin of modbus.probe: a plausible MBAP header (protocol id 0, the spec's length
 * range) with a function code other than 0. */
int
otsec_modbus_probe(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
{
    if (pos < 0 || len - pos < K.mbap_len + 1)
        return 0;
    const unsigned char *p = buf + pos;
    long length = (p[4] << 8) | p[5];
    return !p[2] && !p[3] && K.length_min <= length && length <= K.length_spec_max && p[7] != 0;
}

int
otsec_modbus_init(void)
{
    for (int i = 0; i < S_COUNT; i++)
        if ((S[i] = PyUnicode_InternFromString(str_text[i])) == NULL)
            return -1;
    PyObject *mod = PyImport_ImportModule("otsec.decoders.modbus");
    if (mod == NULL)
        return -1;
    int rc = init_tables(mod);
    Py_DECREF(mod);
    return rc;
}
