/* The C twin of otsec/decoders/opcua.py decode() (see _cdecode.h for the contract).
 *
 * Covered (everything else returns NotImplemented before the state is touched):
 *   - MSG/CLO 'F' chunks on a cleartext channel (known, or new/undecided and inferred
 *     cleartext from the first message exactly as _infer_mode does), no partial message
 *     pending for the request id, with a service whose body decoder has a twin below
 *     (or that has no body decoder), decoded without any Truncated/Malformed;
 *   - MSG/CLO 'F' chunks on a SignAndEncrypt channel (counted, never decoded);
 *   - OPN 'F' chunks (policy None: decoded body; other policies: encrypted);
 *   - HEL and ACK.
 * The message is parsed completely into fresh objects first; the per-connection state
 * (channels, pending requests, encrypted chunk counters, hello flag) is changed only
 * once the whole message is known to be covered. Names, caps and flags are read from
 * the Python modules at init.
 */
#include "_cdecode.h"

#include <stdint.h>
#include <string.h>

/* ---- what init reads from the Python side ------------------------------------------ */

static PyObject *Channel_cls, *thumbprint_fn;
static PyObject *PROTOCOL, *HELLO_KEY, *NONE_POLICY, *CLEARTEXT_UNKNOWN, *POLICY_PREFIX;
static PyObject *A_UNKNOWN_CHANNEL, *A_UNKNOWN_SERVICE, *A_UNSUPPORTED_VERSION;
static PyObject *TWO_BYTE_IDS;               /* tuple of 256 "i=<n>" */
static PyObject *ATTRIBUTES, *NODE_CLASSES, *MESSAGE_SECURITY_MODES, *APPLICATION_TYPES,
    *USER_TOKEN_TYPES, *SECURITY_TOKEN_REQUEST_TYPES, *IDENTITY_TOKENS, *BUILTIN_NAMES[26];
static Py_ssize_t MAX_ITEMS, MAX_ENDPOINTS, MAX_CHANNELS, MAX_PENDING, MAX_TEXT, MAX_NESTING;
static long MIN_HEL, MIN_ACK, MIN_OPN, MIN_MSG, MIN_ERR;
static signed char BUILTIN_SIZE[26];         /* fixed size, -1 variable, 0 not a type */

/* StatusCode names, sorted by code for a binary search */
static uint32_t *status_codes;
static PyObject **status_names;
static Py_ssize_t n_status;

/* _SERVICE_INFO by type id */
typedef struct {
    PyObject *name, *function, *op_class;   /* op_class NULL: ServiceFault */
    char is_request, known, has_body;
} Service;
static Service *services;
static long n_services;

/* interned strings */
#define STRINGS(X) \
    X(delete_target_references) X(target_node_id) X(reason) X(ERR) X(Error) \
    X(locale_ids) X(identity_token) X(identity_policy_id) X(user_name) \
    X(user_certificate_thumbprint) X(session_name) X(client_certificate_thumbprint) \
    X(requested_session_timeout) X(session_id) X(revised_session_timeout) X(unknown) \
    X(UserName) X(X509) \
    X(message_type) X(chunk_type) X(secure_channel_id) X(token_id) X(security_policy) \
    X(security_mode) X(security_mode_inferred) X(sequence_number) X(request_id) X(chunks) \
    X(service) X(authentication_token) X(timestamp) X(request_handle) X(service_result) \
    X(max_age) X(item_count) X(items) X(node_id) X(attribute) X(item_statuses) X(bad_items) \
    X(index_range) X(value_type) X(value) X(object_id) X(method_id) X(input_arguments) \
    X(argument_types) X(view_id) X(path) X(acknowledgements) X(subscription_id) \
    X(more_notifications) X(publish_time) X(notifications) X(publishing_interval) \
    X(publishing_enabled) X(priority) X(sampling_interval) X(subscription_ids) \
    X(delete_subscriptions) X(endpoint_url) X(endpoint_count) X(endpoints) X(security_level) \
    X(user_token_types) X(server_certificate_thumbprint) X(application_uri) X(product_uri) \
    X(application_name) X(application_type) X(encrypted) X(protocol_version) \
    X(receive_buffer_size) X(send_buffer_size) X(max_message_size) X(max_chunk_count) \
    X(parent_node_id) X(requested_node_id) X(browse_name) X(node_class) X(type_definition) \
    X(security_policy_uri) X(sender_certificate) X(sender_certificate_thumbprint) \
    X(receiver_certificate_thumbprint) X(client_protocol_version) X(request_type) \
    X(requested_lifetime) X(server_protocol_version) X(channel_id) X(revised_lifetime) \
    X(channels) X(opening) X(partials) X(encrypted_chunks) X(pending) X(hello_pending) \
    X(reverse) X(policy) X(mode) X(inferred) X(request) X(response) X(ok) X(error) \
    X(other) X(session) X(node) X(Good) X(Sign) X(SignAndEncrypt) X(Null) X(Hello) \
    X(Acknowledge) X(OpenSecureChannel) X(CloseSecureChannel) X(MSG) X(CLO) X(OPN) X(HEL) \
    X(ACK) X(F)
#define DECLARE(s) static PyObject *S_##s;
STRINGS(DECLARE)
#undef DECLARE
static PyObject *S_encrypted_message, *S_unknown_service;

/* ---- reading the message ------------------------------------------------------------- */

typedef struct {
    const unsigned char *b;
    Py_ssize_t n;
} Buf;

/* Parse results: an offset >= 0, or one of these. */
#define BAD (-1)    /* Python would flag or reject it: not covered, NotImplemented */
#define ERR (-2)    /* a Python exception is set */
#define TRY(expr) do { if ((off = (expr)) < 0) return off; } while (0)

static inline uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t
le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static inline Py_ssize_t
skip(const Buf *B, Py_ssize_t off, Py_ssize_t k)
{
    return (k < 0 || off > B->n - k) ? BAD : off + k;
}

static inline Py_ssize_t
rd_u32(const Buf *B, Py_ssize_t off, uint32_t *v)
{
    if (off > B->n - 4)
        return BAD;
    *v = le32(B->b + off);
    return off + 4;
}

static inline Py_ssize_t
rd_u8(const Buf *B, Py_ssize_t off, unsigned *v)
{
    if (off >= B->n)
        return BAD;
    *v = B->b[off];
    return off + 1;
}

/* opcua_encoding._length: -1 (null) or a length within the remaining bytes */
static inline Py_ssize_t
rd_length(const Buf *B, Py_ssize_t off, int32_t *len)
{
    if (off > B->n - 4)
        return BAD;
    int32_t v = (int32_t)le32(B->b + off);
    off += 4;
    if (v < -1 || v > B->n - off)
        return BAD;
    *len = v;
    return off;
}

static inline Py_ssize_t
skip_bytestring(const Buf *B, Py_ssize_t off)
{
    int32_t len;
    TRY(rd_length(B, off, &len));
    return len > 0 ? off + len : off;
}

static inline Py_ssize_t
array_count(const Buf *B, Py_ssize_t off, Py_ssize_t *count)
{
    int32_t len;
    TRY(rd_length(B, off, &len));
    *count = len < 0 ? 0 : len;
    return off;
}

/* opcua_encoding.string: None or the first MAX_TEXT bytes decoded (errors replaced);
 * out NULL: only checked. */
static Py_ssize_t
rd_string(const Buf *B, Py_ssize_t off, PyObject **out)
{
    int32_t len;
    TRY(rd_length(B, off, &len));
    if (out != NULL) {
        if (len < 0) {
            *out = Py_NewRef(Py_None);
        } else {
            *out = PyUnicode_DecodeUTF8((const char *)B->b + off,
                                        len < MAX_TEXT ? len : MAX_TEXT, "replace");
            if (*out == NULL)
                return ERR;
        }
    }
    return len > 0 ? off + len : off;
}

/* ---- formatting ------------------------------------------------------------------------ */

/* v is the text s (v: None or a str) */
static int
is_str(PyObject *v, PyObject *s)
{
    return v != Py_None && PyUnicode_Compare(v, s) == 0;
}

static PyObject *
ascii(const char *s, Py_ssize_t n)
{
    return PyUnicode_DecodeASCII(s, n, NULL);
}

/* decimal digits of v at o; returns the end */
static char *
put_u32(char *o, uint32_t v)
{
    char tmp[10];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k)
        *o++ = tmp[--k];
    return o;
}

/* v as exactly `width` zero-padded decimal digits */
static char *
put_fixed(char *o, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

/* f"0x{code:08X}" */
static PyObject *
hex_code(uint32_t code)
{
    static const char HEX[] = "0123456789ABCDEF";
    char text[10] = {'0', 'x'};
    for (int i = 0; i < 8; i++)
        text[2 + i] = HEX[code >> (28 - 4 * i) & 15];
    return ascii(text, 10);
}

static PyObject *
status_name(uint32_t code)
{
    uint32_t key = code & 0xFFFF0000u;
    Py_ssize_t lo = 0, hi = n_status;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (status_codes[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n_status && status_codes[lo] == key)
        return Py_NewRef(status_names[lo]);
    return hex_code(code);
}

/* table.get(key) or str(key) */
static PyObject *
table_name(PyObject *table, uint32_t key)
{
    PyObject *k = PyLong_FromUnsignedLong(key);
    if (k == NULL)
        return NULL;
    PyObject *v = PyDict_GetItemWithError(table, k);
    if (v != NULL) {
        Py_DECREF(k);
        return Py_NewRef(v);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(k);
        return NULL;
    }
    v = PyObject_Str(k);
    Py_DECREF(k);
    return v;
}

/* opcua_encoding.ticks_iso: None for ticks <= 0 or past year 9999 */
static PyObject *
ticks_iso(int64_t ticks)
{
    if (ticks <= 0)
        return Py_NewRef(Py_None);
    int64_t seconds = ticks / 10000000, rest = ticks % 10000000;
    int64_t days = seconds / 86400, sod = seconds % 86400;
    /* days since 1601-01-01 -> civil date (H. Hinnant's days-to-civil, 1970 epoch) */
    int64_t z = days - 134774 + 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y += 1;
    if (y > 9999)
        return Py_NewRef(Py_None);
    char text[32], *o = text;
    unsigned micro = (unsigned)(rest / 10);
    o = put_fixed(o, (unsigned)y, 4);
    *o++ = '-';
    o = put_fixed(o, (unsigned)m, 2);
    *o++ = '-';
    o = put_fixed(o, (unsigned)d, 2);
    *o++ = 'T';
    o = put_fixed(o, (unsigned)(sod / 3600), 2);
    *o++ = ':';
    o = put_fixed(o, (unsigned)(sod / 60 % 60), 2);
    *o++ = ':';
    o = put_fixed(o, (unsigned)(sod % 60), 2);
    if (micro) {
        *o++ = '.';
        o = put_fixed(o, micro, 6);
    }
    *o++ = 'Z';
    int k = (int)(o - text);
    return ascii(text, k);
}

static Py_ssize_t
rd_datetime(const Buf *B, Py_ssize_t off, PyObject **out)
{
    if (off > B->n - 8)
        return BAD;
    if (out != NULL && (*out = ticks_iso((int64_t)le64(B->b + off))) == NULL)
        return ERR;
    return off + 8;
}

static Py_ssize_t
rd_f64(const Buf *B, Py_ssize_t off, double *v)
{
    if (off > B->n - 8)
        return BAD;
    uint64_t u = le64(B->b + off);
    memcpy(v, &u, 8);
    return off + 8;
}

/* ---- NodeIds -------------------------------------------------------------------------- */

typedef struct {
    unsigned enc, ns;
    int numeric;               /* identifier is the number id, else the bytes at [s, s+len) */
    uint32_t id;
    Py_ssize_t s;
    int32_t len;               /* -1: null String/ByteString */
} NodeParts;

/* opcua_encoding.node_id_parts (without the ExpandedNodeId tail) */
static Py_ssize_t
node_parts(const Buf *B, Py_ssize_t off, NodeParts *p)
{
    unsigned enc, kind;
    TRY(rd_u8(B, off, &enc));
    p->enc = enc;
    kind = enc & 0x3F;
    p->numeric = 1;
    if (kind == 0) {
        p->ns = 0;
        TRY(rd_u8(B, off, &enc));
        p->id = enc;
        return off;
    }
    if (kind == 1) {
        if (off > B->n - 3)
            return BAD;
        p->ns = B->b[off];
        p->id = B->b[off + 1] | B->b[off + 2] << 8;
        return off + 3;
    }
    if (kind > 5 || off > B->n - 2)
        return BAD;
    p->ns = B->b[off] | B->b[off + 1] << 8;
    off += 2;
    if (kind == 2)
        return rd_u32(B, off, &p->id);
    p->numeric = 0;
    if (kind == 4) {
        p->s = off;
        p->len = 16;
        return skip(B, off, 16);
    }
    TRY(rd_length(B, off, &p->len));
    p->s = off;
    return p->len > 0 ? off + p->len : off;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* opcua_encoding._format, with ns given (0 under nsu=) */
static PyObject *
format_node(const Buf *B, const NodeParts *p, unsigned ns)
{
    char prefix[64];                   /* "ns=65535;" + the longest numeric or guid id */
    int k = 0;
    if (ns) {
        memcpy(prefix, "ns=", 3);
        k = (int)(put_u32(prefix + 3, ns) - prefix);
        prefix[k++] = ';';
    }
    if (p->numeric) {
        if (!k && p->id < 256)
            return Py_NewRef(PyTuple_GET_ITEM(TWO_BYTE_IDS, p->id));
        prefix[k++] = 'i';
        prefix[k++] = '=';
        k = (int)(put_u32(prefix + k, p->id) - prefix);
        return ascii(prefix, k);
    }
    unsigned kind = p->enc & 0x3F;
    const unsigned char *s = B->b + p->s;
    if (kind == 3) {
        prefix[k++] = 's';
        prefix[k++] = '=';
        if (p->len <= 0)
            return ascii(prefix, k);
        PyObject *head = ascii(prefix, k);
        if (head == NULL)
            return NULL;
        PyObject *text = PyUnicode_DecodeUTF8((const char *)s,
                                              p->len < MAX_TEXT ? p->len : MAX_TEXT, "replace");
        if (text == NULL) {
            Py_DECREF(head);
            return NULL;
        }
        PyObject *r = PyUnicode_Concat(head, text);
        Py_DECREF(head);
        Py_DECREF(text);
        return r;
    }
    if (kind == 4) {                   /* Data1-Data2-Data3 (little-endian), Data4 as bytes */
        static const char HEX[] = "0123456789abcdef";
        static const signed char ORDER[] = {3, 2, 1, 0, -1, 5, 4, -1, 7, 6, -1, 8, 9, -1,
                                            10, 11, 12, 13, 14, 15};
        char *o = prefix + k;
        *o++ = 'g';
        *o++ = '=';
        for (size_t i = 0; i < sizeof ORDER; i++) {
            if (ORDER[i] < 0) {
                *o++ = '-';
            } else {
                *o++ = HEX[s[ORDER[i]] >> 4];
                *o++ = HEX[s[ORDER[i]] & 15];
            }
        }
        return ascii(prefix, o - prefix);
    }
    /* kind 5: "b=" + base64 */
    Py_ssize_t len = p->len > 0 ? p->len : 0;
    Py_ssize_t total = k + 2 + (len + 2) / 3 * 4;
    PyObject *r = PyUnicode_New(total, 127);
    if (r == NULL)
        return NULL;
    char *o = (char *)PyUnicode_1BYTE_DATA(r);
    memcpy(o, prefix, k);
    o += k;
    *o++ = 'b';
    *o++ = '=';
    Py_ssize_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = s[i] << 16 | s[i + 1] << 8 | s[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[v >> 12 & 63];
        *o++ = B64[v >> 6 & 63];
        *o++ = B64[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = s[i] << 16;
        *o++ = B64[v >> 18];
        *o++ = B64[v >> 12 & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (len - i == 2) {
        uint32_t v = s[i] << 16 | s[i + 1] << 8;
        *o++ = B64[v >> 18];
        *o++ = B64[v >> 12 & 63];
        *o++ = B64[v >> 6 & 63];
        *o++ = '=';
    }
    return r;
}

/* opcua_encoding.node_id; out NULL: only checked */
static Py_ssize_t
rd_node(const Buf *B, Py_ssize_t off, PyObject **out)
{
    NodeParts p;
    TRY(node_parts(B, off, &p));
    if (p.enc & 0xC0)
        return BAD;
    if (out != NULL && (*out = format_node(B, &p, p.ns)) == NULL)
        return ERR;
    return off;
}

/* opcua_encoding.expanded_node_id */
static Py_ssize_t
rd_expanded_node(const Buf *B, Py_ssize_t off, PyObject **out)
{
    NodeParts p;
    int32_t ulen = 0;
    Py_ssize_t uri = 0;
    uint32_t index = 0;
    TRY(node_parts(B, off, &p));
    if (p.enc & 0x80) {
        TRY(rd_length(B, off, &ulen));
        uri = off;
        off += ulen > 0 ? ulen : 0;
    }
    if (p.enc & 0x40)
        TRY(rd_u32(B, off, &index));
    if (out == NULL)
        return off;
    PyObject *text = format_node(B, &p, (p.enc & 0x80) ? 0 : p.ns);
    if (text != NULL && (p.enc & 0x80)) {
        PyObject *u = ulen > 0 ? PyUnicode_DecodeUTF8((const char *)B->b + uri,
                                                      ulen < MAX_TEXT ? ulen : MAX_TEXT,
                                                      "replace")
                               : PyUnicode_FromString("");
        PyObject *r = u ? PyUnicode_FromFormat("nsu=%U;%U", u, text) : NULL;
        Py_XDECREF(u);
        Py_SETREF(text, r);
    }
    if (text != NULL && (p.enc & 0x40))
        Py_SETREF(text, PyUnicode_FromFormat("svr=%u;%U", (unsigned)index, text));
    if (text == NULL)
        return ERR;
    *out = text;
    return off;
}

/* opcua_encoding.numeric_type_id: *sid -1 when not a numeric id in namespace 0 */
static Py_ssize_t
rd_type_id(const Buf *B, Py_ssize_t off, long *sid)
{
    NodeParts p;
    TRY(node_parts(B, off, &p));
    int ns_known = 1;
    if (p.enc & 0x80) {
        TRY(skip_bytestring(B, off));
        ns_known = 0;
    }
    if (p.enc & 0x40)
        TRY(skip(B, off, 4));
    *sid = (ns_known && p.ns == 0 && p.numeric) ? (long)p.id : -1;
    return off;
}

/* ---- skipping encoded values ------------------------------------------------------------- */

static Py_ssize_t skip_variant(const Buf *B, Py_ssize_t off, int depth);
static Py_ssize_t data_value_status(const Buf *B, Py_ssize_t off, int depth, int64_t *status);

static Py_ssize_t
skip_extension_object(const Buf *B, Py_ssize_t off)
{
    long sid;
    unsigned enc;
    TRY(rd_type_id(B, off, &sid));
    TRY(rd_u8(B, off, &enc));
    if (enc == 0)
        return off;
    if (enc > 2)
        return BAD;
    return skip_bytestring(B, off);
}

static Py_ssize_t
skip_diagnostic_info(const Buf *B, Py_ssize_t off, int depth)
{
    unsigned mask;
    if (depth > MAX_NESTING)
        return BAD;
    TRY(rd_u8(B, off, &mask));
    TRY(skip(B, off, 4 * ((mask & 1) + (mask >> 1 & 1) + (mask >> 2 & 1) + (mask >> 3 & 1))));
    if (mask & 0x10)
        TRY(skip_bytestring(B, off));
    if (mask & 0x20)
        TRY(skip(B, off, 4));
    if (mask & 0x40)
        TRY(skip_diagnostic_info(B, off, depth + 1));
    return off;
}

/* opcua_encoding._skip_builtin */
static Py_ssize_t
skip_builtin(const Buf *B, Py_ssize_t off, int type_id, int depth)
{
    int size = BUILTIN_SIZE[type_id];
    if (size > 0)
        return skip(B, off, size);
    switch (type_id) {
    case 12: case 15: case 16:
        return skip_bytestring(B, off);
    case 17:
        return rd_node(B, off, NULL);
    case 18:
        return rd_expanded_node(B, off, NULL);
    case 20:
        TRY(skip(B, off, 2));
        return skip_bytestring(B, off);
    case 21: {
        unsigned mask;
        TRY(rd_u8(B, off, &mask));
        if (mask & 1)
            TRY(skip_bytestring(B, off));
        if (mask & 2)
            TRY(skip_bytestring(B, off));
        return off;
    }
    case 22:
        return skip_extension_object(B, off);
    case 23: {
        int64_t st;
        return data_value_status(B, off, depth + 1, &st);
    }
    case 24:
        return skip_variant(B, off, depth + 1);
    default:
        return skip_diagnostic_info(B, off, depth + 1);
    }
}

/* the array part of a Variant (count, elements, dimensions) */
static Py_ssize_t
skip_variant_array(const Buf *B, Py_ssize_t off, unsigned mask, int depth, Py_ssize_t *count)
{
    int type_id = mask & 0x3F;
    TRY(array_count(B, off, count));
    if (BUILTIN_SIZE[type_id] > 0) {
        TRY(skip(B, off, BUILTIN_SIZE[type_id] * *count));
    } else {
        for (Py_ssize_t i = 0; i < *count; i++)
            TRY(skip_builtin(B, off, type_id, depth));
    }
    if (mask & 0x40) {
        Py_ssize_t dims;
        TRY(array_count(B, off, &dims));
        TRY(skip(B, off, 4 * dims));
    }
    return off;
}

static Py_ssize_t
skip_variant(const Buf *B, Py_ssize_t off, int depth)
{
    unsigned mask;
    if (depth > MAX_NESTING)
        return BAD;
    TRY(rd_u8(B, off, &mask));
    int type_id = mask & 0x3F;
    if (type_id == 0)
        return off;
    if (type_id > 25)
        return BAD;
    if (!(mask & 0x80))
        return skip_builtin(B, off, type_id, depth);
    Py_ssize_t count;
    return skip_variant_array(B, off, mask, depth, &count);
}

/* opcua_encoding.data_value_status: *status -1 when absent */
static Py_ssize_t
data_value_status(const Buf *B, Py_ssize_t off, int depth, int64_t *status)
{
    unsigned mask;
    if (depth > MAX_NESTING)
        return BAD;
    TRY(rd_u8(B, off, &mask));
    *status = -1;
    if (mask & 0x01)
        TRY(skip_variant(B, off, depth + 1));
    if (mask & 0x02) {
        uint32_t code;
        TRY(rd_u32(B, off, &code));
        *status = code;
    }
    return skip(B, off, ((mask & 0x04) ? 8 : 0) + ((mask & 0x10) ? 2 : 0) +
                        ((mask & 0x08) ? 8 : 0) + ((mask & 0x20) ? 2 : 0));
}

/* opcua_encoding._scalar_value of a scalar at off (already checked by skip_builtin) */
static PyObject *
scalar_value(const Buf *B, Py_ssize_t off, int type_id)
{
    const unsigned char *p = B->b + off;
    switch (type_id) {
    case 1: return PyBool_FromLong(p[0] != 0);
    case 2: return PyLong_FromLong((signed char)p[0]);
    case 3: return PyLong_FromLong(p[0]);
    case 4: return PyLong_FromLong((int16_t)(p[0] | p[1] << 8));
    case 5: return PyLong_FromLong(p[0] | p[1] << 8);
    case 6: return PyLong_FromLong((int32_t)le32(p));
    case 7: return PyLong_FromUnsignedLong(le32(p));
    case 8: return PyLong_FromLongLong((int64_t)le64(p));
    case 9: return PyLong_FromUnsignedLongLong(le64(p));
    case 10: case 11: {
        double v;
        if (type_id == 10) {
            uint32_t u = le32(p);
            float f;
            memcpy(&f, &u, 4);
            v = f;
        } else {
            uint64_t u = le64(p);
            memcpy(&v, &u, 8);
        }
        PyObject *f = PyFloat_FromDouble(v);
        if (f != NULL && !isfinite(v))
            Py_SETREF(f, PyObject_Str(f));
        return f;
    }
    case 12: {
        PyObject *s;
        return rd_string(B, off, &s) < 0 ? NULL : s;
    }
    case 19: return status_name(le32(p));
    case 13: return ticks_iso((int64_t)le64(p));
    default: return Py_NewRef(Py_None);
    }
}

/* opcua_encoding.variant: (type name, value or array length); out NULLs: only checked */
static Py_ssize_t
rd_variant(const Buf *B, Py_ssize_t off, int depth, PyObject **type_name, PyObject **value)
{
    unsigned mask;
    if (depth > MAX_NESTING)
        return BAD;
    TRY(rd_u8(B, off, &mask));
    int type_id = mask & 0x3F;
    if (type_id == 0) {
        if (type_name != NULL) {
            *type_name = Py_NewRef(S_Null);
            if (value != NULL)
                *value = Py_NewRef(Py_None);
        }
        return off;
    }
    if (type_id > 25)
        return BAD;
    if (mask & 0x80) {
        Py_ssize_t count;
        TRY(skip_variant_array(B, off, mask, depth, &count));
        if (type_name != NULL) {
            *type_name = PyUnicode_FromFormat("%U[]", BUILTIN_NAMES[type_id]);
            if (*type_name == NULL)
                return ERR;
            if (value != NULL && (*value = PyLong_FromSsize_t(count)) == NULL) {
                Py_CLEAR(*type_name);
                return ERR;
            }
        }
        return off;
    }
    Py_ssize_t end;
    if ((end = skip_builtin(B, off, type_id, depth)) < 0)
        return end;
    if (type_name != NULL) {
        *type_name = Py_NewRef(BUILTIN_NAMES[type_id]);
        if (value != NULL && (*value = scalar_value(B, off, type_id)) == NULL) {
            Py_CLEAR(*type_name);
            return ERR;
        }
    }
    return end;
}

/* ---- building the event ------------------------------------------------------------------ */

typedef struct {
    PyObject *detail;       /* new reference */
    PyObject *targets;      /* new reference, a list */
    PyObject *result;       /* new reference or NULL (None) */
    PyObject *status;       /* new reference or NULL (None) */
    PyObject *identity;     /* new reference or NULL (None) */
} Ev;

static void
ev_clear(Ev *ev)
{
    Py_CLEAR(ev->detail);
    Py_CLEAR(ev->targets);
    Py_CLEAR(ev->result);
    Py_CLEAR(ev->status);
    Py_CLEAR(ev->identity);
}

/* d[key] = v, stealing v (NULL: the error of the call that made it) */
static int
put(PyObject *d, PyObject *key, PyObject *v)
{
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItem(d, key, v);
    Py_DECREF(v);
    return rc;
}

#define PUT(d, key, v) do { if (put((d), (key), (v)) < 0) return ERR; } while (0)
/* an item's field: the item is NULL beyond MAX_ITEMS (checked, not kept) */
#define ITEM_NODE(item, key, rd) do { \
        PyObject *v_ = NULL; \
        TRY(rd(B, off, (item) ? &v_ : NULL)); \
        if ((item) != NULL) PUT(item, key, v_); \
    } while (0)

static int
add_target(Ev *ev, PyObject *name)
{
    PyObject *args[6] = {S_node, Py_None, Py_None, Py_None, Py_None, name};
    PyObject *t = otsec_target_new(args, 6);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(ev->targets, t);
    Py_DECREF(t);
    return rc;
}

static PyObject *
new_event(PyObject *kind, PyObject *function, PyObject *op_class, PyObject *code, Ev *ev,
          PyObject *anomalies, PyObject *pair_key)
{
    PyObject *args[12] = {PROTOCOL, kind, function, op_class, code, ev->targets,
                          ev->result ? ev->result : Py_None, ev->status ? ev->status : Py_None,
                          anomalies, ev->detail, ev->identity ? ev->identity : Py_None,
                          pair_key};
    return otsec_event_new(args, 12);
}

/* ---- service headers --------------------------------------------------------------------- */

static Py_ssize_t
request_header(const Buf *B, Py_ssize_t off, Ev *ev)
{
    PyObject *token, *d = ev->detail;
    uint32_t handle;
    TRY(rd_node(B, off, &token));
    PUT(d, S_authentication_token, token);
    PyObject *ts;
    TRY(rd_datetime(B, off, &ts));
    PUT(d, S_timestamp, ts);
    TRY(rd_u32(B, off, &handle));
    PUT(d, S_request_handle, PyLong_FromUnsignedLong(handle));
    TRY(skip(B, off, 4));                  /* ReturnDiagnostics */
    TRY(skip_bytestring(B, off));          /* AuditEntryId */
    TRY(skip(B, off, 4));                  /* TimeoutHint */
    return skip_extension_object(B, off);  /* AdditionalHeader */
}

static Py_ssize_t
response_header(const Buf *B, Py_ssize_t off, Ev *ev)
{
    PyObject *ts, *d = ev->detail;
    uint32_t handle, code;
    TRY(rd_datetime(B, off, &ts));
    PUT(d, S_timestamp, ts);
    TRY(rd_u32(B, off, &handle));
    PUT(d, S_request_handle, PyLong_FromUnsignedLong(handle));
    TRY(rd_u32(B, off, &code));
    ev->result = Py_NewRef((code & 0x80000000u) ? S_error : S_ok);
    if ((ev->status = status_name(code)) == NULL)
        return ERR;
    PUT(d, S_service_result, hex_code(code));
    TRY(skip_diagnostic_info(B, off, 0));
    Py_ssize_t count;
    TRY(array_count(B, off, &count));      /* StringTable */
    for (Py_ssize_t i = 0; i < count; i++)
        TRY(skip_bytestring(B, off));
    return skip_extension_object(B, off);
}

/* the header check of _service_header_ok, without building anything */
static int
header_ok(const Buf *B, int ua_client)
{
    long sid;
    Py_ssize_t off = rd_type_id(B, 0, &sid);
    if (off < 0 || sid < 0 || sid >= n_services || !services[sid].known ||
        services[sid].is_request != ua_client)
        return 0;
    if (ua_client) {
        if ((off = rd_node(B, off, NULL)) < 0 || (off = skip(B, off, 16)) < 0 ||
            (off = skip_bytestring(B, off)) < 0 || (off = skip(B, off, 4)) < 0)
            return 0;
    } else {
        Py_ssize_t count;
        if ((off = skip(B, off, 16)) < 0 || (off = skip_diagnostic_info(B, off, 0)) < 0 ||
            (off = array_count(B, off, &count)) < 0)
            return 0;
        for (Py_ssize_t i = 0; i < count; i++)
            if ((off = skip_bytestring(B, off)) < 0)
                return 0;
    }
    return skip_extension_object(B, off) >= 0;
}

/* ---- service bodies ------------------------------------------------------------------------ */

typedef Py_ssize_t (*item_fn)(const Buf *B, Py_ssize_t off, PyObject *item);

/* _request_items: detail item_count, items (the first MAX_ITEMS dicts) */
static Py_ssize_t
request_items(const Buf *B, Py_ssize_t off, Ev *ev, item_fn read_one)
{
    Py_ssize_t count;
    TRY(array_count(B, off, &count));
    PUT(ev->detail, S_item_count, PyLong_FromSsize_t(count));
    PyObject *items = PyList_New(0);
    if (items == NULL || PyDict_SetItem(ev->detail, S_items, items) < 0) {
        Py_XDECREF(items);
        return ERR;
    }
    Py_DECREF(items);                      /* the detail holds it */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = NULL;
        if (i < MAX_ITEMS) {
            if ((item = PyDict_New()) == NULL)
                return ERR;
            int rc = PyList_Append(items, item);
            Py_DECREF(item);
            if (rc < 0)
                return ERR;
        }
        TRY(read_one(B, off, item));
    }
    return off;
}

/* _item_statuses over the first MAX_ITEMS codes */
static int
item_statuses(Ev *ev, const uint32_t *codes, Py_ssize_t kept, Py_ssize_t count)
{
    Py_ssize_t bad = 0;
    int64_t first_bad = -1;
    PyObject *names = PyList_New(kept);
    if (names == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < kept; i++) {
        PyObject *name = status_name(codes[i]);
        if (name == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyList_SET_ITEM(names, i, name);
        if (codes[i] & 0x80000000u) {
            if (!bad++)
                first_bad = codes[i];
        }
    }
    if (put(ev->detail, S_item_count, PyLong_FromSsize_t(count)) < 0 ||
        put(ev->detail, S_item_statuses, names) < 0 ||
        put(ev->detail, S_bad_items, PyLong_FromSsize_t(bad)) < 0)
        return -1;
    if (count && bad == count && ev->result == S_ok) {
        Py_SETREF(ev->result, Py_NewRef(S_error));
        Py_SETREF(ev->status, status_name((uint32_t)first_bad));
        if (ev->status == NULL)
            return -1;
    }
    return 0;
}

typedef Py_ssize_t (*code_fn)(const Buf *B, Py_ssize_t off, uint32_t *code);

/* _read_items of StatusCodes, then _item_statuses */
static Py_ssize_t
status_items(const Buf *B, Py_ssize_t off, Ev *ev, code_fn read_one)
{
    Py_ssize_t count;
    uint32_t codes[64];
    TRY(array_count(B, off, &count));
    for (Py_ssize_t i = 0; i < count; i++) {
        uint32_t code;
        TRY(read_one(B, off, &code));
        if (i < MAX_ITEMS)
            codes[i] = code;
    }
    if (item_statuses(ev, codes, count < MAX_ITEMS ? count : MAX_ITEMS, count) < 0)
        return ERR;
    return off;
}

static Py_ssize_t
attribute(const Buf *B, Py_ssize_t off, PyObject *item)
{
    uint32_t attr;
    TRY(rd_u32(B, off, &attr));
    if (item != NULL)
        PUT(item, S_attribute, table_name(ATTRIBUTES, attr));
    return off;
}

static Py_ssize_t
read_value_id(const Buf *B, Py_ssize_t off, PyObject *item)
{
    ITEM_NODE(item, S_node_id, rd_node);
    TRY(attribute(B, off, item));
    TRY(skip_bytestring(B, off));          /* IndexRange */
    TRY(skip(B, off, 2));                  /* DataEncoding */
    return skip_bytestring(B, off);
}

static Py_ssize_t
read_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    double max_age;
    TRY(rd_f64(B, off, &max_age));
    PUT(ev->detail, S_max_age, PyFloat_FromDouble(max_age));
    TRY(skip(B, off, 4));                  /* TimestampsToReturn */
    return request_items(B, off, ev, read_value_id);
}

static Py_ssize_t
dv_code(const Buf *B, Py_ssize_t off, uint32_t *code)
{
    int64_t status;
    TRY(data_value_status(B, off, 0, &status));
    *code = status < 0 ? 0 : (uint32_t)status;
    return off;
}

static Py_ssize_t
read_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return status_items(B, off, ev, dv_code);
}

static Py_ssize_t
u32_code(const Buf *B, Py_ssize_t off, uint32_t *code)
{
    return rd_u32(B, off, code);
}

static Py_ssize_t
status_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return status_items(B, off, ev, u32_code);
}

static Py_ssize_t
write_value(const Buf *B, Py_ssize_t off, PyObject *item)
{
    ITEM_NODE(item, S_node_id, rd_node);
    TRY(attribute(B, off, item));
    PyObject *range = NULL;
    TRY(rd_string(B, off, item ? &range : NULL));
    if (item != NULL) {
        int set = range != Py_None && PyUnicode_GET_LENGTH(range) > 0;
        if (set)
            PUT(item, S_index_range, range);
        else
            Py_DECREF(range);
    }
    /* data_value(depth 0): Value, Status, timestamps, picoseconds */
    unsigned mask;
    TRY(rd_u8(B, off, &mask));
    if (mask & 0x01) {
        PyObject *vtype = NULL, *value = NULL;
        TRY(rd_variant(B, off, 1, item ? &vtype : NULL, item ? &value : NULL));
        if (item != NULL) {
            if (put(item, S_value_type, vtype) < 0) {
                Py_DECREF(value);
                return ERR;
            }
            PUT(item, S_value, value);
        }
    }
    if (mask & 0x02)
        TRY(skip(B, off, 4));
    return skip(B, off, ((mask & 0x04) ? 8 : 0) + ((mask & 0x10) ? 2 : 0) +
                        ((mask & 0x08) ? 8 : 0) + ((mask & 0x20) ? 2 : 0));
}

static Py_ssize_t
write_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return request_items(B, off, ev, write_value);
}

static Py_ssize_t
call_method(const Buf *B, Py_ssize_t off, PyObject *item)
{
    ITEM_NODE(item, S_object_id, rd_node);
    ITEM_NODE(item, S_method_id, rd_node);
    Py_ssize_t count;
    TRY(array_count(B, off, &count));
    PyObject *types = NULL;
    if (item != NULL && (types = PyList_New(0)) == NULL)
        return ERR;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *vtype = NULL;
        Py_ssize_t r = rd_variant(B, off, 0, (types && i < MAX_ITEMS) ? &vtype : NULL, NULL);
        if (r < 0 || (vtype != NULL && PyList_Append(types, vtype) < 0)) {
            Py_XDECREF(vtype);
            Py_XDECREF(types);
            return r < 0 ? r : ERR;
        }
        Py_XDECREF(vtype);
        off = r;
    }
    if (item != NULL) {
        if (put(item, S_input_arguments, PyLong_FromSsize_t(count)) < 0) {
            Py_DECREF(types);
            return ERR;
        }
        PUT(item, S_argument_types, types);
    }
    return off;
}

static Py_ssize_t
call_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return request_items(B, off, ev, call_method);
}

static Py_ssize_t
call_result(const Buf *B, Py_ssize_t off, uint32_t *code)
{
    Py_ssize_t count;
    TRY(rd_u32(B, off, code));
    TRY(array_count(B, off, &count));      /* InputArgumentResults */
    TRY(skip(B, off, 4 * count));
    TRY(array_count(B, off, &count));      /* InputArgumentDiagnosticInfos */
    for (Py_ssize_t i = 0; i < count; i++)
        TRY(skip_diagnostic_info(B, off, 0));
    TRY(array_count(B, off, &count));      /* OutputArguments */
    for (Py_ssize_t i = 0; i < count; i++)
        TRY(skip_variant(B, off, 0));
    return off;
}

static Py_ssize_t
call_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return status_items(B, off, ev, call_result);
}

static Py_ssize_t
browse_description(const Buf *B, Py_ssize_t off, PyObject *item)
{
    ITEM_NODE(item, S_node_id, rd_node);
    TRY(skip(B, off, 4));                  /* BrowseDirection */
    TRY(rd_node(B, off, NULL));            /* ReferenceTypeId */
    return skip(B, off, 9);                /* IncludeSubtypes, NodeClassMask, ResultMask */
}

static Py_ssize_t
browse_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    PyObject *view;
    TRY(rd_node(B, off, &view));
    Py_ssize_t r = skip(B, off, 12);
    if (r < 0) {
        Py_DECREF(view);
        return r;
    }
    off = r;
    if (PyUnicode_CompareWithASCIIString(view, "i=0") != 0)
        PUT(ev->detail, S_view_id, view);
    else
        Py_DECREF(view);
    return request_items(B, off, ev, browse_description);
}

static Py_ssize_t
node_item(const Buf *B, Py_ssize_t off, PyObject *item)
{
    ITEM_NODE(item, S_node_id, rd_node);
    return off;
}

static Py_ssize_t
node_array(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return request_items(B, off, ev, node_item);
}

/* opcua_encoding.qualified_name */
static Py_ssize_t
rd_qualified_name(const Buf *B, Py_ssize_t off, PyObject **out)
{
    if (off > B->n - 2)
        return BAD;
    unsigned ns = B->b[off] | B->b[off + 1] << 8;
    PyObject *name = NULL;
    TRY(rd_string(B, off + 2, out ? &name : NULL));
    if (out == NULL)
        return off;
    if (name == Py_None)
        Py_SETREF(name, PyUnicode_FromString(""));
    if (name != NULL && ns)
        Py_SETREF(name, PyUnicode_FromFormat("%u:%U", ns, name));
    if (name == NULL)
        return ERR;
    *out = name;
    return off;
}

static Py_ssize_t
browse_path(const Buf *B, Py_ssize_t off, PyObject *item)
{
    ITEM_NODE(item, S_node_id, rd_node);
    Py_ssize_t count;
    TRY(array_count(B, off, &count));
    PyObject *names = NULL;
    if (item != NULL && (names = PyList_New(0)) == NULL)
        return ERR;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = NULL;
        Py_ssize_t r = rd_node(B, off, NULL);                 /* ReferenceTypeId */
        if (r >= 0)
            r = skip(B, r, 2);                                 /* IsInverse, IncludeSubtypes */
        if (r >= 0)
            r = rd_qualified_name(B, r, (names && i < MAX_ITEMS) ? &name : NULL);
        if (r < 0 || (name != NULL && PyList_Append(names, name) < 0)) {
            Py_XDECREF(name);
            Py_XDECREF(names);
            return r < 0 ? r : ERR;
        }
        Py_XDECREF(name);
        off = r;
    }
    if (item != NULL) {
        PyObject *sep = PyUnicode_FromString("/");
        PyObject *path = sep ? PyUnicode_Join(sep, names) : NULL;
        Py_XDECREF(sep);
        Py_DECREF(names);
        PUT(item, S_path, path);
    }
    return off;
}

static Py_ssize_t
translate_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return request_items(B, off, ev, browse_path);
}

static Py_ssize_t
publish_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    Py_ssize_t count;
    TRY(array_count(B, off, &count));
    PUT(ev->detail, S_acknowledgements, PyLong_FromSsize_t(count));
    return skip(B, off, 8 * count);
}

static Py_ssize_t
publish_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    PyObject *d = ev->detail, *t;
    uint32_t v;
    unsigned more;
    Py_ssize_t count;
    TRY(rd_u32(B, off, &v));
    PUT(d, S_subscription_id, PyLong_FromUnsignedLong(v));
    TRY(array_count(B, off, &count));      /* AvailableSequenceNumbers */
    TRY(skip(B, off, 4 * count));
    TRY(rd_u8(B, off, &more));
    PUT(d, S_more_notifications, PyBool_FromLong(more != 0));
    TRY(rd_u32(B, off, &v));
    PUT(d, S_sequence_number, PyLong_FromUnsignedLong(v));
    TRY(rd_datetime(B, off, &t));
    PUT(d, S_publish_time, t);
    TRY(array_count(B, off, &count));
    PUT(d, S_notifications, PyLong_FromSsize_t(count));
    for (Py_ssize_t i = 0; i < count; i++)
        TRY(skip_extension_object(B, off));
    return off;
}

static Py_ssize_t
create_subscription_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    double interval;
    unsigned enabled, priority;
    TRY(rd_f64(B, off, &interval));
    PUT(ev->detail, S_publishing_interval, PyFloat_FromDouble(interval));
    TRY(skip(B, off, 12));                 /* lifetime, keep-alive, max notifications */
    TRY(rd_u8(B, off, &enabled));
    PUT(ev->detail, S_publishing_enabled, PyBool_FromLong(enabled != 0));
    TRY(rd_u8(B, off, &priority));
    PUT(ev->detail, S_priority, PyLong_FromLong(priority));
    return off;
}

static Py_ssize_t
create_subscription_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    uint32_t id;
    double interval;
    TRY(rd_u32(B, off, &id));
    PUT(ev->detail, S_subscription_id, PyLong_FromUnsignedLong(id));
    TRY(rd_f64(B, off, &interval));
    PUT(ev->detail, S_publishing_interval, PyFloat_FromDouble(interval));
    return skip(B, off, 8);
}

static Py_ssize_t
monitored_item_create(const Buf *B, Py_ssize_t off, PyObject *item)
{
    double interval;
    TRY(read_value_id(B, off, item));
    TRY(skip(B, off, 8));                  /* MonitoringMode, ClientHandle */
    TRY(rd_f64(B, off, &interval));
    if (item != NULL)
        PUT(item, S_sampling_interval, PyFloat_FromDouble(interval));
    TRY(skip_extension_object(B, off));    /* Filter */
    return skip(B, off, 5);                /* QueueSize, DiscardOldest */
}

static Py_ssize_t
create_monitored_items_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    uint32_t id;
    TRY(rd_u32(B, off, &id));
    PUT(ev->detail, S_subscription_id, PyLong_FromUnsignedLong(id));
    TRY(skip(B, off, 4));                  /* TimestampsToReturn */
    return request_items(B, off, ev, monitored_item_create);
}

static Py_ssize_t
monitored_item_result(const Buf *B, Py_ssize_t off, uint32_t *code)
{
    TRY(rd_u32(B, off, code));
    TRY(skip(B, off, 16));                 /* item id, revised sampling interval, queue size */
    return skip_extension_object(B, off);  /* FilterResult */
}

static Py_ssize_t
create_monitored_items_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return status_items(B, off, ev, monitored_item_result);
}

static Py_ssize_t
subscription_ids(const Buf *B, Py_ssize_t off, Ev *ev)
{
    Py_ssize_t count;
    TRY(array_count(B, off, &count));
    PyObject *ids = PyList_New(0);
    if (ids == NULL)
        return ERR;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint32_t id;
        Py_ssize_t r = rd_u32(B, off, &id);
        if (r < 0) {
            Py_DECREF(ids);
            return r;
        }
        off = r;
        if (i < MAX_ITEMS) {
            PyObject *v = PyLong_FromUnsignedLong(id);
            if (v == NULL || PyList_Append(ids, v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(ids);
                return ERR;
            }
            Py_DECREF(v);
        }
    }
    PUT(ev->detail, S_subscription_ids, ids);
    PUT(ev->detail, S_item_count, PyLong_FromSsize_t(count));
    return off;
}

static Py_ssize_t
close_session_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    unsigned flag;
    TRY(rd_u8(B, off, &flag));
    PUT(ev->detail, S_delete_subscriptions, PyBool_FromLong(flag != 0));
    return off;
}

static Py_ssize_t
get_endpoints_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    PyObject *url;
    Py_ssize_t count;
    TRY(rd_string(B, off, &url));
    PUT(ev->detail, S_endpoint_url, url);
    for (int k = 0; k < 2; k++) {          /* LocaleIds, ProfileUris */
        TRY(array_count(B, off, &count));
        for (Py_ssize_t i = 0; i < count; i++)
            TRY(skip_bytestring(B, off));
    }
    return off;
}

/* opcua._policy_name: None for a null/empty URI, the suffix after POLICY_PREFIX */
static PyObject *
policy_name(PyObject *uri)
{
    if (uri == Py_None || PyUnicode_GET_LENGTH(uri) == 0)
        return Py_NewRef(Py_None);
    Py_ssize_t k = PyUnicode_GET_LENGTH(POLICY_PREFIX);
    Py_ssize_t m = PyUnicode_Tailmatch(uri, POLICY_PREFIX, 0, k, -1);
    if (m < 0)
        return NULL;
    if (m)
        return PyUnicode_Substring(uri, k, PyUnicode_GET_LENGTH(uri));
    return Py_NewRef(uri);
}

static int
truthy(PyObject *v)
{
    return v != Py_None && PyUnicode_GET_LENGTH(v) > 0;
}

/* _application_description; *out NULL: only checked */
static Py_ssize_t
application_description(const Buf *B, Py_ssize_t off, PyObject **out)
{
    PyObject *uri = NULL, *product = NULL, *name = NULL, *desc = NULL;
    unsigned mask;
    uint32_t app_type;
    int keep = out != NULL;
    Py_ssize_t r = rd_string(B, off, keep ? &uri : NULL);
    if (r >= 0)
        r = rd_string(B, r, keep ? &product : NULL);
    if (r >= 0)                                            /* LocalizedText */
        r = rd_u8(B, r, &mask);
    if (r >= 0 && (mask & 1))
        r = skip_bytestring(B, r);
    if (r >= 0 && (mask & 2))
        r = rd_string(B, r, keep ? &name : NULL);
    if (r >= 0)
        r = rd_u32(B, r, &app_type);
    for (int k = 0; k < 2 && r >= 0; k++)                 /* GatewayServerUri, DiscoveryProfileUri */
        r = skip_bytestring(B, r);
    Py_ssize_t count = 0;
    if (r >= 0)
        r = array_count(B, r, &count);                     /* DiscoveryUrls */
    for (Py_ssize_t i = 0; i < count && r >= 0; i++)
        r = skip_bytestring(B, r);
    if (r >= 0 && keep) {
        if ((desc = PyDict_New()) == NULL ||
            (truthy(uri) && PyDict_SetItem(desc, S_application_uri, uri) < 0) ||
            (truthy(product) && PyDict_SetItem(desc, S_product_uri, product) < 0) ||
            (name != NULL && truthy(name) && PyDict_SetItem(desc, S_application_name, name) < 0) ||
            put(desc, S_application_type, table_name(APPLICATION_TYPES, app_type)) < 0) {
            Py_CLEAR(desc);
            r = ERR;
        }
        *out = desc;
    }
    Py_XDECREF(uri);
    Py_XDECREF(product);
    Py_XDECREF(name);
    return r;
}

static PyObject *
thumbprint(const Buf *B, Py_ssize_t start, int32_t len)
{
    PyObject *cert = PyBytes_FromStringAndSize((const char *)B->b + start, len);
    if (cert == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(thumbprint_fn, cert);
    Py_DECREF(cert);
    return r;
}

/* _endpoint_description without "server" (*server gets it); *out NULL: only checked */
static Py_ssize_t
endpoint_description(const Buf *B, Py_ssize_t off, PyObject **out, PyObject **server)
{
    PyObject *url = NULL, *policy = NULL, *tokens = NULL, *ep = NULL;
    int keep = out != NULL;
    int32_t clen = -1;
    Py_ssize_t cert = 0, count = 0;
    uint32_t mode;
    unsigned level;
    *server = NULL;
    Py_ssize_t r = rd_string(B, off, keep ? &url : NULL);
    if (r >= 0)
        r = application_description(B, r, keep ? server : NULL);
    if (r >= 0 && (r = rd_length(B, r, &clen)) >= 0) {
        cert = r;
        r += clen > 0 ? clen : 0;
    }
    if (r >= 0)
        r = rd_u32(B, r, &mode);
    if (r >= 0)
        r = rd_string(B, r, keep ? &policy : NULL);
    if (r >= 0)
        r = array_count(B, r, &count);
    if (r >= 0 && keep && (tokens = PySet_New(NULL)) == NULL)
        r = ERR;
    for (Py_ssize_t i = 0; i < count && r >= 0; i++) {    /* UserTokenPolicy */
        uint32_t type;
        r = skip_bytestring(B, r);
        if (r >= 0)
            r = rd_u32(B, r, &type);
        for (int k = 0; k < 3 && r >= 0; k++)
            r = skip_bytestring(B, r);
        if (r >= 0 && keep) {
            PyObject *t = table_name(USER_TOKEN_TYPES, type);
            if (t == NULL || PySet_Add(tokens, t) < 0)
                r = ERR;
            Py_XDECREF(t);
        }
    }
    if (r >= 0)
        r = skip_bytestring(B, r);                         /* TransportProfileUri */
    if (r >= 0)
        r = rd_u8(B, r, &level);
    if (r >= 0 && keep) {
        PyObject *sorted = PySequence_List(tokens);
        if (sorted == NULL || PyList_Sort(sorted) < 0 || (ep = PyDict_New()) == NULL ||
            PyDict_SetItem(ep, S_endpoint_url, url) < 0 ||
            put(ep, S_security_mode, table_name(MESSAGE_SECURITY_MODES, mode)) < 0 ||
            put(ep, S_security_policy, policy_name(policy)) < 0 ||
            put(ep, S_security_level, PyLong_FromLong(level)) < 0 ||
            PyDict_SetItem(ep, S_user_token_types, sorted) < 0 ||
            (clen > 0 && put(ep, S_server_certificate_thumbprint,
                             thumbprint(B, cert, clen)) < 0)) {
            Py_CLEAR(ep);
            r = ERR;
        }
        Py_XDECREF(sorted);
        *out = ep;
    }
    if (r < 0)
        Py_CLEAR(*server);
    Py_XDECREF(url);
    Py_XDECREF(policy);
    Py_XDECREF(tokens);
    return r;
}

/* _endpoints: EndpointDescription[], the first server description as the identity */
static Py_ssize_t
endpoints(const Buf *B, Py_ssize_t off, Ev *ev)
{
    Py_ssize_t count;
    TRY(array_count(B, off, &count));
    PyObject *endpoints = PyList_New(0);
    if (endpoints == NULL)
        return ERR;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *ep = NULL, *server = NULL;
        int keep = i < MAX_ENDPOINTS || ev->identity == NULL;
        Py_ssize_t r = endpoint_description(B, off, keep ? &ep : NULL, &server);
        if (r < 0) {
            Py_DECREF(endpoints);
            return r;
        }
        off = r;
        if (server != NULL) {
            if (ev->identity == NULL && PyDict_GET_SIZE(server))
                ev->identity = Py_NewRef(server);
            Py_DECREF(server);
        }
        if (ep != NULL) {
            int rc = i < MAX_ENDPOINTS ? PyList_Append(endpoints, ep) : 0;
            Py_DECREF(ep);
            if (rc < 0) {
                Py_DECREF(endpoints);
                return ERR;
            }
        }
    }
    if (put(ev->detail, S_endpoint_count, PyLong_FromSsize_t(count)) < 0) {
        Py_DECREF(endpoints);
        return ERR;
    }
    PUT(ev->detail, S_endpoints, endpoints);
    return off;
}

static Py_ssize_t
get_endpoints_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return endpoints(B, off, ev);
}

/* a non-empty ByteString's thumbprint into detail[key] */
static Py_ssize_t
cert_thumbprint(const Buf *B, Py_ssize_t off, PyObject *detail, PyObject *key)
{
    int32_t len;
    TRY(rd_length(B, off, &len));
    if (len > 0)
        PUT(detail, key, thumbprint(B, off, len));
    return len > 0 ? off + len : off;
}

static Py_ssize_t
create_session_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    PyObject *client, *v;
    double timeout;
    TRY(application_description(B, off, &client));
    if (PyDict_GET_SIZE(client))
        ev->identity = client;
    else
        Py_DECREF(client);
    TRY(skip_bytestring(B, off));      /* ServerUri */
    TRY(rd_string(B, off, &v));
    PUT(ev->detail, S_endpoint_url, v);
    TRY(rd_string(B, off, &v));
    PUT(ev->detail, S_session_name, v);
    TRY(skip_bytestring(B, off));      /* ClientNonce */
    TRY(cert_thumbprint(B, off, ev->detail, S_client_certificate_thumbprint));
    TRY(rd_f64(B, off, &timeout));
    PUT(ev->detail, S_requested_session_timeout, PyFloat_FromDouble(timeout));
    return skip(B, off, 4);            /* MaxResponseMessageSize */
}

static Py_ssize_t
create_session_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    PyObject *id;
    double timeout;
    TRY(rd_node(B, off, &id));
    PUT(ev->detail, S_session_id, id);
    TRY(rd_node(B, off, NULL));        /* AuthenticationToken */
    TRY(rd_f64(B, off, &timeout));
    PUT(ev->detail, S_revised_session_timeout, PyFloat_FromDouble(timeout));
    TRY(skip_bytestring(B, off));      /* ServerNonce */
    TRY(cert_thumbprint(B, off, ev->detail, S_server_certificate_thumbprint));
    return endpoints(B, off, ev);
}

static Py_ssize_t
skip_signature_data(const Buf *B, Py_ssize_t off)
{
    TRY(skip_bytestring(B, off));
    return skip_bytestring(B, off);
}

static Py_ssize_t
activate_session_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    Py_ssize_t count;
    TRY(skip_signature_data(B, off));  /* ClientSignature */
    TRY(array_count(B, off, &count));  /* ClientSoftwareCertificates */
    for (Py_ssize_t i = 0; i < count; i++)
        TRY(skip_signature_data(B, off));
    TRY(array_count(B, off, &count));  /* LocaleIds */
    PyObject *locales = PyList_New(0);
    if (locales == NULL)
        return ERR;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *loc = NULL;
        Py_ssize_t r = rd_string(B, off, i < MAX_ITEMS ? &loc : NULL);
        if (r < 0 || (loc != NULL && PyList_Append(locales, loc) < 0)) {
            Py_XDECREF(loc);
            Py_DECREF(locales);
            return r < 0 ? r : ERR;
        }
        Py_XDECREF(loc);
        off = r;
    }
    if (PyList_GET_SIZE(locales))
        PUT(ev->detail, S_locale_ids, locales);
    else
        Py_DECREF(locales);
    /* the identity token: an ExtensionObject */
    long type_id;
    unsigned enc;
    int32_t blen = -1;
    Py_ssize_t bstart = 0;
    TRY(rd_type_id(B, off, &type_id));
    TRY(rd_u8(B, off, &enc));
    if (enc > 2)
        return BAD;
    if (enc != 0) {
        TRY(rd_length(B, off, &blen));
        bstart = off;
        off += blen > 0 ? blen : 0;
        if (enc == 2)
            blen = -1;                 /* XML: no binary body */
    }
    PyObject *token = NULL;
    if (type_id >= 0) {
        PyObject *key = PyLong_FromLong(type_id);
        if (key == NULL)
            return ERR;
        token = PyDict_GetItemWithError(IDENTITY_TOKENS, key);
        Py_DECREF(key);
        if (token == NULL && PyErr_Occurred())
            return ERR;
    }
    if (token != NULL && PyUnicode_Check(token) && PyUnicode_GET_LENGTH(token))
        PUT(ev->detail, S_identity_token, Py_NewRef(token));
    else if (token != NULL && PyObject_IsTrue(token))
        return BAD;                    /* a table entry that is no text: left to Python */
    else if (type_id >= 0)
        PUT(ev->detail, S_identity_token, PyUnicode_FromFormat("i=%ld", type_id));
    else
        PUT(ev->detail, S_identity_token, Py_NewRef(S_unknown));
    if (blen >= 0) {
        Buf body = {B->b + bstart, blen};
        PyObject *v;
        Py_ssize_t boff;
        if ((boff = rd_string(&body, 0, &v)) < 0)
            return boff;
        PUT(ev->detail, S_identity_policy_id, v);
        if (token != NULL && is_str(token, S_UserName)) {
            if ((boff = rd_string(&body, boff, &v)) < 0)
                return boff;
            PUT(ev->detail, S_user_name, v);
        } else if (token != NULL && is_str(token, S_X509)) {
            if ((boff = cert_thumbprint(&body, boff, ev->detail, S_user_certificate_thumbprint)) < 0)
                return boff;
        }
    }
    return skip_signature_data(B, off); /* UserTokenSignature */
}

static Py_ssize_t
activate_session_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    TRY(skip_bytestring(B, off));      /* ServerNonce */
    return status_response(B, off, ev);
}


/* _is_null_numeric: numeric id 0 in any namespace */
static int
null_numeric(PyObject *nid)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(nid);
    if (PyUnicode_CompareWithASCIIString(nid, "i=0") == 0)
        return 1;
    if (n < 4)
        return 0;
    PyObject *tail = PyUnicode_Substring(nid, n - 4, n);
    if (tail == NULL)
        return -1;
    int r = PyUnicode_CompareWithASCIIString(tail, ";i=0") == 0;
    Py_DECREF(tail);
    return r;
}

static Py_ssize_t
add_nodes_item(const Buf *B, Py_ssize_t off, PyObject *item)
{
    PyObject *parent = NULL, *requested = NULL;
    uint32_t node_class;
    TRY(rd_expanded_node(B, off, item ? &parent : NULL));
    if (item != NULL && PyDict_SetItem(item, S_parent_node_id, parent) < 0) {
        Py_DECREF(parent);
        return ERR;
    }
    Py_XDECREF(parent);                 /* the item holds it */
    TRY(rd_node(B, off, NULL));         /* ReferenceTypeId */
    TRY(rd_expanded_node(B, off, item ? &requested : NULL));
    if (item != NULL) {
        int null = null_numeric(requested);
        if (null < 0 || PyDict_SetItem(item, S_requested_node_id, requested) < 0 ||
            PyDict_SetItem(item, S_node_id, null ? parent : requested) < 0) {
            Py_DECREF(requested);
            return ERR;
        }
        Py_DECREF(requested);
    }
    ITEM_NODE(item, S_browse_name, rd_qualified_name);
    TRY(rd_u32(B, off, &node_class));
    if (item != NULL)
        PUT(item, S_node_class, table_name(NODE_CLASSES, node_class));
    TRY(skip_extension_object(B, off)); /* NodeAttributes */
    ITEM_NODE(item, S_type_definition, rd_expanded_node);
    return off;
}

static Py_ssize_t
add_nodes_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return request_items(B, off, ev, add_nodes_item);
}

static Py_ssize_t
add_nodes_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    Py_ssize_t count;
    uint32_t codes[64] = {0};
    PyObject *nodes[64];
    Py_ssize_t kept = 0;
    TRY(array_count(B, off, &count));
    Py_ssize_t r = off;
    for (Py_ssize_t i = 0; i < count && r >= 0; i++) {
        uint32_t code;
        PyObject *nid = NULL;
        r = rd_u32(B, r, &code);
        if (r >= 0)
            r = rd_node(B, r, i < MAX_ITEMS ? &nid : NULL);
        if (r >= 0 && i < MAX_ITEMS) {
            codes[kept] = code;
            nodes[kept++] = nid;
        }
    }
    if (r >= 0 && item_statuses(ev, codes, kept, count) < 0)
        r = ERR;
    for (Py_ssize_t i = 0; i < kept; i++) {
        if (r >= 0 && !(codes[i] & 0x80000000u) && PyList_GET_SIZE(ev->targets) < MAX_ITEMS &&
            add_target(ev, nodes[i]) < 0)
            r = ERR;
        Py_DECREF(nodes[i]);
    }
    return r;
}

static Py_ssize_t
delete_nodes_item(const Buf *B, Py_ssize_t off, PyObject *item)
{
    unsigned flag;
    ITEM_NODE(item, S_node_id, rd_node);
    TRY(rd_u8(B, off, &flag));
    if (item != NULL)
        PUT(item, S_delete_target_references, PyBool_FromLong(flag != 0));
    return off;
}

static Py_ssize_t
delete_nodes_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return request_items(B, off, ev, delete_nodes_item);
}

static Py_ssize_t
add_reference(const Buf *B, Py_ssize_t off, PyObject *item)
{
    ITEM_NODE(item, S_node_id, rd_node);  /* SourceNodeId */
    TRY(rd_node(B, off, NULL));            /* ReferenceTypeId */
    TRY(skip(B, off, 1));                  /* IsForward */
    TRY(skip_bytestring(B, off));          /* TargetServerUri */
    ITEM_NODE(item, S_target_node_id, rd_expanded_node);
    return skip(B, off, 4);                /* TargetNodeClass */
}

static Py_ssize_t
add_references_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return request_items(B, off, ev, add_reference);
}

static Py_ssize_t
delete_reference(const Buf *B, Py_ssize_t off, PyObject *item)
{
    ITEM_NODE(item, S_node_id, rd_node);  /* SourceNodeId */
    TRY(rd_node(B, off, NULL));            /* ReferenceTypeId */
    TRY(skip(B, off, 1));                  /* IsForward */
    ITEM_NODE(item, S_target_node_id, rd_expanded_node);
    return skip(B, off, 1);                /* DeleteBidirectional */
}

static Py_ssize_t
delete_references_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    return request_items(B, off, ev, delete_reference);
}

typedef Py_ssize_t (*body_fn)(const Buf *B, Py_ssize_t off, Ev *ev);

/* The body decoders with a twin, by type id (BODY_DECODERS entries not here: not covered). */
static body_fn
body_twin(long sid)
{
    switch (sid) {
    case 631: return read_request;
    case 634: return read_response;
    case 673: return write_request;
    case 676: case 503: case 497: case 509: case 850: return status_response;
    case 712: return call_request;
    case 715: return call_response;
    case 527: return browse_request;
    case 554: return translate_request;
    case 560: case 566: return node_array;
    case 428: case 422: return get_endpoints_request;
    case 431: return get_endpoints_response;
    case 461: return create_session_request;
    case 464: return create_session_response;
    case 467: return activate_session_request;
    case 470: return activate_session_response;
    case 473: return close_session_request;
    case 787: return create_subscription_request;
    case 790: return create_subscription_response;
    case 751: return create_monitored_items_request;
    case 754: return create_monitored_items_response;
    case 488: return add_nodes_request;
    case 491: return add_nodes_response;
    case 500: return delete_nodes_request;
    case 494: return add_references_request;
    case 506: return delete_references_request;
    case 826: return publish_request;
    case 829: return publish_response;
    case 847: return subscription_ids;
    default: return NULL;
    }
}

static Py_ssize_t
open_channel_request(const Buf *B, Py_ssize_t off, Ev *ev)
{
    uint32_t version, req_type, mode, lifetime;
    TRY(rd_u32(B, off, &version));
    PUT(ev->detail, S_client_protocol_version, PyLong_FromUnsignedLong(version));
    TRY(rd_u32(B, off, &req_type));
    TRY(rd_u32(B, off, &mode));
    PUT(ev->detail, S_request_type, table_name(SECURITY_TOKEN_REQUEST_TYPES, req_type));
    PUT(ev->detail, S_security_mode, table_name(MESSAGE_SECURITY_MODES, mode));
    TRY(skip_bytestring(B, off));          /* ClientNonce */
    TRY(rd_u32(B, off, &lifetime));
    PUT(ev->detail, S_requested_lifetime, PyLong_FromUnsignedLong(lifetime));
    return off;
}

static Py_ssize_t
open_channel_response(const Buf *B, Py_ssize_t off, Ev *ev)
{
    uint32_t v;
    TRY(rd_u32(B, off, &v));
    PUT(ev->detail, S_server_protocol_version, PyLong_FromUnsignedLong(v));
    TRY(rd_u32(B, off, &v));
    PUT(ev->detail, S_channel_id, PyLong_FromUnsignedLong(v));
    TRY(rd_u32(B, off, &v));
    PUT(ev->detail, S_token_id, PyLong_FromUnsignedLong(v));
    TRY(skip(B, off, 8));                  /* CreatedAt */
    TRY(rd_u32(B, off, &v));
    PUT(ev->detail, S_revised_lifetime, PyLong_FromUnsignedLong(v));
    return skip_bytestring(B, off);        /* ServerNonce */
}

static body_fn
body_decoder(long sid)
{
    if (sid == 446)
        return open_channel_request;
    if (sid == 449)
        return open_channel_response;
    return body_twin(sid);
}

/* ---- service messages ------------------------------------------------------------------------ */

/* What a covered message does to the state, applied only once it is known to be covered. */
typedef struct {
    int pending_op;                 /* 0 none, 1 remember the request, 2 forget it */
    PyObject *op_class;             /* borrowed: the request's op class */
} PendingChange;

static PyObject *
kind_of(int ua_client)
{
    return ua_client ? S_request : S_response;
}

/* _service_event of a complete cleartext body: the event, Py_NotImplemented (new
 * references) or NULL. ev->detail holds the keys so far; anomalies is borrowed. */
static PyObject *
service_event(const Buf *body, int ua_client, PyObject *state, Ev *ev, PyObject *anomalies,
              PyObject *request_id, PendingChange *change)
{
    long sid;
    Py_ssize_t off = rd_type_id(body, 0, &sid);
    if (off < 0)
        return Py_NewRef(Py_NotImplemented);
    if (sid < 0 || sid >= n_services || !services[sid].known) {
        PyObject *flags = PySequence_List(anomalies), *code = NULL, *r = NULL;
        if (flags != NULL && PyList_Append(flags, A_UNKNOWN_SERVICE) == 0 &&
            (code = sid < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(sid)) != NULL)
            r = new_event(kind_of(ua_client), S_unknown_service, S_other, code, ev, flags,
                          request_id);
        Py_XDECREF(flags);
        Py_XDECREF(code);
        return r;
    }
    const Service *svc = &services[sid];
    body_fn decode_body = NULL;
    if (svc->has_body && (decode_body = body_decoder(sid)) == NULL)
        return Py_NewRef(Py_NotImplemented);
    if (PyDict_SetItem(ev->detail, S_service, svc->name) < 0)
        return NULL;
    PyObject *pending = NULL, *op_class = svc->op_class;
    if (op_class == NULL) {               /* ServiceFault: the class of what failed */
        if ((pending = PyObject_GetAttr(state, S_pending)) == NULL || !PyDict_Check(pending)) {
            Py_XDECREF(pending);
            return pending ? Py_NewRef(Py_NotImplemented) : NULL;
        }
        op_class = PyDict_GetItemWithError(pending, request_id);
        Py_DECREF(pending);
        if (op_class == NULL) {
            if (PyErr_Occurred())
                return NULL;
            op_class = S_other;
        }
    }
    Py_INCREF(op_class);              /* the pending dict may drop it before the event is made */
    off = (svc->is_request ? request_header : response_header)(body, off, ev);
    if (off >= 0 && decode_body != NULL)
        off = decode_body(body, off, ev);
    if (off >= 0) {
        PyObject *items = PyDict_GetItemWithError(ev->detail, S_items);
        if (items != NULL) {
            static PyObject **keys[] = {&S_node_id, &S_object_id, &S_method_id};
            Py_ssize_t n = PyList_GET_SIZE(items);
            for (Py_ssize_t i = 0; i < n && off >= 0; i++) {
                PyObject *item = PyList_GET_ITEM(items, i);
                for (int k = 0; k < 3 && off >= 0; k++) {
                    PyObject *name = PyDict_GetItemWithError(item, *keys[k]);
                    if (name != NULL && PyList_GET_SIZE(ev->targets) < MAX_ITEMS &&
                        add_target(ev, name) < 0)
                        off = ERR;
                    else if (name == NULL && PyErr_Occurred())
                        off = ERR;
                }
            }
        } else if (PyErr_Occurred()) {
            off = ERR;
        }
    }
    if (off < 0) {
        Py_DECREF(op_class);
        return off == BAD ? Py_NewRef(Py_NotImplemented) : NULL;
    }
    PyObject *code = PyLong_FromLong(sid);
    PyObject *r = code ? new_event(svc->is_request ? S_request : S_response, svc->function,
                                   op_class, code, ev, anomalies, request_id) : NULL;
    Py_XDECREF(code);
    change->pending_op = svc->is_request ? 1 : 2;
    change->op_class = svc->op_class;     /* requests always have one */
    Py_DECREF(op_class);
    return r;
}

static int
apply_pending(PyObject *state, PyObject *request_id, const PendingChange *change)
{
    if (change->pending_op == 0)
        return 0;
    PyObject *pending = PyObject_GetAttr(state, S_pending);
    if (pending == NULL)
        return -1;
    int rc = 0;
    if (change->pending_op == 1) {
        if (PyDict_GET_SIZE(pending) >= MAX_PENDING)
            rc = otsec_drop_oldest(pending);
        if (rc == 0)
            rc = PyDict_SetItem(pending, request_id, change->op_class);
    } else {
        PyObject *old = PyDict_GetItemWithError(pending, request_id);
        if (old != NULL)
            rc = PyDict_DelItem(pending, request_id);
        else if (PyErr_Occurred())
            rc = -1;
    }
    Py_DECREF(pending);
    return rc;
}

/* The state's dict/list attribute (new reference), NULL with TypeError cleared when it has
 * another type (the twin then leaves the message to Python). */
static PyObject *
state_attr(PyObject *state, PyObject *name, int want_dict, int *err)
{
    PyObject *v = PyObject_GetAttr(state, name);
    *err = v == NULL;
    if (v != NULL && !(want_dict ? PyDict_Check(v) : PyList_Check(v)))
        Py_CLEAR(v);
    return v;
}

/* ---- channels ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject *policy, *mode;       /* new references (None when unset) */
    int inferred;
} ChannelInfo;

static int
channel_info(PyObject *channel, ChannelInfo *ci)
{
    ci->policy = ci->mode = NULL;
    if (channel == NULL) {         /* a channel the message creates: _Channel(None, None) */
        ci->policy = Py_NewRef(Py_None);
        ci->mode = Py_NewRef(Py_None);
        ci->inferred = 0;
        return 0;
    }
    PyObject *inferred;
    if ((ci->policy = PyObject_GetAttr(channel, S_policy)) == NULL ||
        (ci->mode = PyObject_GetAttr(channel, S_mode)) == NULL ||
        (inferred = PyObject_GetAttr(channel, S_inferred)) == NULL) {
        Py_CLEAR(ci->policy);
        Py_CLEAR(ci->mode);
        return -1;
    }
    ci->inferred = PyObject_IsTrue(inferred);
    Py_DECREF(inferred);
    if (ci->inferred < 0 || (ci->policy != Py_None && !PyUnicode_Check(ci->policy)) ||
        (ci->mode != Py_None && !PyUnicode_Check(ci->mode))) {
        Py_CLEAR(ci->policy);
        Py_CLEAR(ci->mode);
        return ci->inferred < 0 ? -1 : 1;
    }
    return 0;
}

static void
channel_info_clear(ChannelInfo *ci)
{
    Py_CLEAR(ci->policy);
    Py_CLEAR(ci->mode);
}

/* _Channel.describe */
static int
describe(PyObject *detail, const ChannelInfo *ci)
{
    if (ci->policy != Py_None && PyDict_SetItem(detail, S_security_policy, ci->policy) < 0)
        return -1;
    if (ci->mode != Py_None) {
        if (PyDict_SetItem(detail, S_security_mode, ci->mode) < 0)
            return -1;
        if (ci->inferred && PyDict_SetItem(detail, S_security_mode_inferred, Py_True) < 0)
            return -1;
    }
    return 0;
}


/* _encrypted_chunk of an 'F' chunk: the detail gets encrypted/chunks, counter read now
 * (reset by the caller once covered). */
static PyObject *
encrypted_event(PyObject *function, PyObject *op_class, int ua_client, PyObject *counters,
                Ev *ev, PyObject *anomalies)
{
    PyObject *count = PyList_GET_ITEM(counters, ua_client ? 1 : 0);
    long c = PyLong_CheckExact(count) ? PyLong_AsLong(count) : -1;
    if (c < 0 || c == LONG_MAX) {
        PyErr_Clear();
        return Py_NewRef(Py_NotImplemented);
    }
    if (PyDict_SetItem(ev->detail, S_encrypted, Py_True) < 0 ||
        put(ev->detail, S_chunks, PyLong_FromLong(c + 1)) < 0)
        return NULL;
    return new_event(kind_of(ua_client), function, op_class, Py_None, ev, anomalies, Py_None);
}

/* {"message_type": ..., "chunk_type": "F"} */
static PyObject *
start_detail(PyObject *mtype_name)
{
    PyObject *d = _PyDict_NewPresized(16);     /* a service message's detail: 10-20 keys */
    if (d != NULL && (PyDict_SetItem(d, S_message_type, mtype_name) < 0 ||
                      PyDict_SetItem(d, S_chunk_type, S_F) < 0))
        Py_CLEAR(d);
    return d;
}

/* counters[direction] = 0 */
static int
reset_counter(PyObject *counters, int ua_client)
{
    PyObject *zero = PyLong_FromLong(0);
    return zero == NULL ? -1 : PyList_SetItem(counters, ua_client ? 1 : 0, zero);
}

/* the sequence header at off, then the service message after it (cleartext chunk, 'F') */
static PyObject *
cleartext_final(const Buf *M, Py_ssize_t off, int ua_client, PyObject *state, Ev *ev,
                PyObject *anomalies, PendingChange *change)
{
    if (off > M->n - 8)
        return Py_NewRef(Py_NotImplemented);
    int err;
    PyObject *seq = PyLong_FromUnsignedLong(le32(M->b + off));
    if (put(ev->detail, S_sequence_number, seq) < 0)
        return NULL;
    PyObject *request_id = PyLong_FromUnsignedLong(le32(M->b + off + 4));
    if (request_id == NULL)
        return NULL;
    PyObject *r = NULL, *partials = state_attr(state, S_partials, 1, &err), *key = NULL;
    if (partials == NULL) {
        r = err ? NULL : Py_NewRef(Py_NotImplemented);
        goto done;
    }
    if (PyDict_GET_SIZE(partials)) {
        key = PyTuple_Pack(2, ua_client ? Py_True : Py_False, request_id);
        int has = key ? PyDict_Contains(partials, key) : -1;
        if (has) {                     /* a multi-chunk message ends here: Python's */
            r = has < 0 ? NULL : Py_NewRef(Py_NotImplemented);
            goto done;
        }
    }
    if (PyDict_SetItem(ev->detail, S_request_id, request_id) < 0 ||
        put(ev->detail, S_chunks, PyLong_FromLong(1)) < 0)
        goto done;
    Buf body = {M->b + off + 8, M->n - off - 8};
    r = service_event(&body, ua_client, state, ev, anomalies, request_id, change);
    if (r != NULL && r != Py_NotImplemented && apply_pending(state, request_id, change) < 0)
        Py_CLEAR(r);
done:
    Py_XDECREF(key);
    Py_XDECREF(partials);
    Py_DECREF(request_id);
    return r;
}

/* a one-event list from an event, passing NotImplemented and NULL through */
/* Everything in a message's processing that may fail before the state is changed ends
 * in NOT_COVERED (NotImplemented) or FAIL (NULL). */
#define NOT_COVERED do { result = Py_NewRef(Py_NotImplemented); goto done; } while (0)
#define FAIL do { result = NULL; goto done; } while (0)

/* _symmetric: MSG and CLO 'F' chunks */
static PyObject *
symmetric(const Buf *M, PyObject *mtype_name, int is_msg, int ua_client, PyObject *state)
{
    PyObject *result = NULL, *channels = NULL, *channel = NULL, *scid = NULL, *token = NULL,
             *anomalies = NULL, *counters = NULL, *created = NULL;
    Ev ev = {0};
    ChannelInfo ci = {0};
    PendingChange change = {0};
    int err, known, unknown_flag = 0, insert = 0, infer, cleartext;

    if ((channels = state_attr(state, S_channels, 1, &err)) == NULL) {
        if (err)
            FAIL;
        NOT_COVERED;
    }
    if ((scid = PyLong_FromUnsignedLong(le32(M->b + 8))) == NULL ||
        (token = PyLong_FromUnsignedLong(le32(M->b + 12))) == NULL)
        FAIL;
    channel = PyDict_GetItemWithError(channels, scid);
    known = channel != NULL;
    if (known) {
        Py_INCREF(channel);
    } else {
        if (PyErr_Occurred())
            FAIL;
        unknown_flag = PyDict_GET_SIZE(channels) > 0;
        insert = PyDict_GET_SIZE(channels) < MAX_CHANNELS;
        if ((channel = PyObject_GetAttr(state, S_opening)) == NULL)
            FAIL;
        if (channel == Py_None)
            Py_CLEAR(channel);         /* a new _Channel(None, None) */
    }
    if ((err = channel_info(channel, &ci)) != 0) {
        if (err < 0)
            FAIL;
        NOT_COVERED;
    }
    infer = ci.mode == Py_None;
    if (infer) {                       /* _infer_mode of an 'F' chunk */
        Buf body = {M->b + 24, M->n - 24};
        cleartext = header_ok(&body, ua_client);
        PyObject *mode = NULL;
        if (cleartext)
            mode = (ci.policy != Py_None && !is_str(ci.policy, NONE_POLICY))
                       ? S_Sign : CLEARTEXT_UNKNOWN;
        else if (ci.policy != Py_None)
            mode = S_SignAndEncrypt;
        if (mode != NULL) {
            Py_SETREF(ci.mode, Py_NewRef(mode));
            ci.inferred = 1;
        } else {
            infer = 0;                 /* undecided: the channel keeps mode None */
        }
    } else {
        cleartext = !is_str(ci.mode, S_SignAndEncrypt);
    }
    if ((ev.detail = start_detail(mtype_name)) == NULL ||
        PyDict_SetItem(ev.detail, S_secure_channel_id, scid) < 0 ||
        PyDict_SetItem(ev.detail, S_token_id, token) < 0 || describe(ev.detail, &ci) < 0 ||
        (anomalies = PyList_New(0)) == NULL || (ev.targets = PyList_New(0)) == NULL ||
        (unknown_flag && PyList_Append(anomalies, A_UNKNOWN_CHANNEL) < 0))
        FAIL;
    if (!cleartext) {
        if ((counters = state_attr(state, S_encrypted_chunks, 0, &err)) == NULL) {
            if (err)
                FAIL;
            NOT_COVERED;
        }
        if (PyList_GET_SIZE(counters) != 2)
            NOT_COVERED;
        result = encrypted_event(is_msg ? S_encrypted_message : S_CloseSecureChannel,
                                 is_msg ? S_other : S_session, ua_client, counters, &ev,
                                 anomalies);
        if (result == NULL || result == Py_NotImplemented)
            goto done;
        if (reset_counter(counters, ua_client) < 0)
            FAIL;
    } else {
        result = cleartext_final(M, 16, ua_client, state, &ev, anomalies, &change);
        if (result == NULL || result == Py_NotImplemented)
            goto done;
    }
    /* covered: the channel changes (pending requests and counters are done) */
    if (!known) {
        if (channel == NULL) {
            PyObject *args[3] = {ci.policy, ci.mode, ci.inferred ? Py_True : Py_False};
            if ((created = PyObject_Vectorcall(Channel_cls, args, 3, NULL)) == NULL)
                goto fail_late;
        }
        if (insert && PyDict_SetItem(channels, scid, channel ? channel : created) < 0)
            goto fail_late;
    }
    if (infer && channel != NULL && (PyObject_SetAttr(channel, S_mode, ci.mode) < 0 ||
                                     PyObject_SetAttr(channel, S_inferred, Py_True) < 0))
        goto fail_late;
    goto done;
fail_late:
    Py_CLEAR(result);
done:
    Py_XDECREF(channels);
    Py_XDECREF(channel);
    Py_XDECREF(created);
    Py_XDECREF(scid);
    Py_XDECREF(token);
    Py_XDECREF(anomalies);
    Py_XDECREF(counters);
    channel_info_clear(&ci);
    ev_clear(&ev);
    return otsec_one_event(result);
}

static PyObject *
hex_text(const unsigned char *p, Py_ssize_t n)
{
    static const char HEX[] = "0123456789abcdef";
    PyObject *r = PyUnicode_New(2 * n, 127);
    if (r == NULL)
        return NULL;
    char *o = (char *)PyUnicode_1BYTE_DATA(r);
    for (Py_ssize_t i = 0; i < n; i++) {
        o[2 * i] = HEX[p[i] >> 4];
        o[2 * i + 1] = HEX[p[i] & 15];
    }
    return r;
}

/* _open_channel: OPN 'F' chunks */
static PyObject *
open_channel(const Buf *M, int ua_client, PyObject *state)
{
    PyObject *result = NULL, *uri = NULL, *policy = NULL, *scid = NULL, *channel = NULL,
             *channels = NULL, *anomalies = NULL, *counters = NULL, *created = NULL;
    Ev ev = {0};
    ChannelInfo ci = {0};
    PendingChange change = {0};
    int32_t clen, tlen;
    Py_ssize_t off = 12, cert, thumb;
    int err, insert = 0, none_policy;

    if ((off = rd_string(M, off, &uri)) == ERR)
        FAIL;
    if (off < 0 || (off = rd_length(M, off, &clen)) < 0)
        NOT_COVERED;
    cert = off;
    off += clen > 0 ? clen : 0;
    if ((off = rd_length(M, off, &tlen)) < 0)
        NOT_COVERED;
    thumb = off;
    off += tlen > 0 ? tlen : 0;
    if ((policy = policy_name(uri)) == NULL ||
        (scid = PyLong_FromUnsignedLong(le32(M->b + 8))) == NULL)
        FAIL;
    none_policy = is_str(policy, NONE_POLICY);
    if ((channels = state_attr(state, S_channels, 1, &err)) == NULL) {
        if (err)
            FAIL;
        NOT_COVERED;
    }
    if (!ua_client) {
        if ((channel = PyObject_GetAttr(state, S_opening)) == NULL)
            FAIL;
        if (channel == Py_None)
            Py_CLEAR(channel);
        int has = PyDict_Contains(channels, scid);
        if (has < 0)
            FAIL;
        insert = le32(M->b + 8) != 0 && (has || PyDict_GET_SIZE(channels) < MAX_CHANNELS);
    }
    if (channel != NULL) {
        if ((err = channel_info(channel, &ci)) != 0) {
            if (err < 0)
                FAIL;
            NOT_COVERED;
        }
    } else {                           /* _Channel(policy, "None" under policy None) */
        ci.policy = Py_NewRef(policy);
        ci.mode = Py_NewRef(none_policy ? NONE_POLICY : Py_None);
        ci.inferred = 0;
    }
    if ((ev.detail = start_detail(S_OPN)) == NULL ||
        PyDict_SetItem(ev.detail, S_secure_channel_id, scid) < 0 ||
        PyDict_SetItem(ev.detail, S_security_policy_uri, uri) < 0 ||
        PyDict_SetItem(ev.detail, S_sender_certificate, clen > 0 ? Py_True : Py_False) < 0 ||
        (clen > 0 && put(ev.detail, S_sender_certificate_thumbprint,
                         thumbprint(M, cert, clen)) < 0) ||
        (tlen > 0 && put(ev.detail, S_receiver_certificate_thumbprint,
                         hex_text(M->b + thumb, tlen)) < 0) ||
        describe(ev.detail, &ci) < 0 || (anomalies = PyList_New(0)) == NULL ||
        (ev.targets = PyList_New(0)) == NULL)
        FAIL;
    if (!none_policy) {
        if ((counters = state_attr(state, S_encrypted_chunks, 0, &err)) == NULL) {
            if (err)
                FAIL;
            NOT_COVERED;
        }
        if (PyList_GET_SIZE(counters) != 2)
            NOT_COVERED;
        result = encrypted_event(S_OpenSecureChannel, S_session, ua_client, counters, &ev,
                                 anomalies);
        if (result == NULL || result == Py_NotImplemented)
            goto done;
        if (reset_counter(counters, ua_client) < 0)
            goto fail_late;
    } else {
        result = cleartext_final(M, off, ua_client, state, &ev, anomalies, &change);
        if (result == NULL || result == Py_NotImplemented)
            goto done;
    }
    if (channel == NULL) {
        PyObject *args[3] = {ci.policy, ci.mode, Py_False};
        if ((created = PyObject_Vectorcall(Channel_cls, args, 3, NULL)) == NULL)
            goto fail_late;
    }
    if (ua_client ? PyObject_SetAttr(state, S_opening, created) < 0
                  : (insert && PyDict_SetItem(channels, scid, channel ? channel : created) < 0))
        goto fail_late;
    goto done;
fail_late:
    Py_CLEAR(result);
done:
    Py_XDECREF(uri);
    Py_XDECREF(policy);
    Py_XDECREF(scid);
    Py_XDECREF(channel);
    Py_XDECREF(channels);
    Py_XDECREF(created);
    Py_XDECREF(anomalies);
    Py_XDECREF(counters);
    channel_info_clear(&ci);
    ev_clear(&ev);
    return otsec_one_event(result);
}

/* _hello / _acknowledge */
static PyObject *
handshake(const Buf *M, int hello, PyObject *state)
{
    PyObject *result = NULL, *anomalies = NULL, *url = NULL;
    Ev ev = {0};
    static PyObject **names[] = {&S_receive_buffer_size, &S_send_buffer_size,
                                 &S_max_message_size, &S_max_chunk_count};
    uint32_t version = le32(M->b + 8);
    if (hello && rd_string(M, 28, &url) < 0) {
        if (PyErr_Occurred())
            FAIL;
        NOT_COVERED;
    }
    if ((ev.detail = start_detail(hello ? S_HEL : S_ACK)) == NULL ||
        put(ev.detail, S_protocol_version, PyLong_FromUnsignedLong(version)) < 0 ||
        (anomalies = PyList_New(0)) == NULL || (ev.targets = PyList_New(0)) == NULL ||
        (version != 0 && PyList_Append(anomalies, A_UNSUPPORTED_VERSION) < 0))
        FAIL;
    for (int k = 0; k < 4; k++)
        if (put(ev.detail, *names[k], PyLong_FromUnsignedLong(le32(M->b + 12 + 4 * k))) < 0)
            FAIL;
    if (hello && PyDict_SetItem(ev.detail, S_endpoint_url, url) < 0)
        FAIL;
    if (!hello) {
        ev.result = Py_NewRef(S_ok);
        ev.status = Py_NewRef(S_Good);
    }
    result = new_event(hello ? S_request : S_response, hello ? S_Hello : S_Acknowledge,
                       S_session, Py_None, &ev, anomalies, HELLO_KEY);
    if (result != NULL &&
        PyObject_SetAttr(state, S_hello_pending, hello ? Py_True : Py_False) < 0)
        Py_CLEAR(result);
done:
    Py_XDECREF(url);
    Py_XDECREF(anomalies);
    ev_clear(&ev);
    return otsec_one_event(result);
}

/* _error: ERR answers the HEL when no ACK came, else the newest request still waiting */
static PyObject *
error_message(const Buf *M, PyObject *state)
{
    PyObject *result = NULL, *anomalies = NULL, *reason = NULL, *pending = NULL, *key = NULL,
             *op_class = NULL, *hp = NULL;
    Ev ev = {0};
    int err, hello;
    uint32_t code = le32(M->b + 8);
    if (rd_string(M, 12, &reason) < 0) {
        if (PyErr_Occurred())
            FAIL;
        NOT_COVERED;
    }
    if ((hp = PyObject_GetAttr(state, S_hello_pending)) == NULL || (hello = PyObject_IsTrue(hp)) < 0)
        FAIL;
    if ((pending = state_attr(state, S_pending, 1, &err)) == NULL) {
        if (err)
            FAIL;
        NOT_COVERED;
    }
    if (hello) {
        key = Py_NewRef(HELLO_KEY);
        op_class = Py_NewRef(S_session);
    } else if (PyDict_GET_SIZE(pending)) {
        PyObject *last = NULL, *value = NULL, *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(pending, &pos, &k, &v)) {
            last = k;
            value = v;
        }
        key = Py_NewRef(last);
        op_class = Py_NewRef(value);
    } else {
        key = Py_NewRef(Py_None);
        op_class = Py_NewRef(S_session);
    }
    if ((ev.detail = start_detail(S_ERR)) == NULL || (anomalies = PyList_New(0)) == NULL ||
        (ev.targets = PyList_New(0)) == NULL ||
        put(ev.detail, S_error, hex_code(code)) < 0 ||
        PyDict_SetItem(ev.detail, S_reason, reason) < 0 || (ev.status = status_name(code)) == NULL)
        FAIL;
    ev.result = Py_NewRef(S_error);
    result = new_event(S_response, S_Error, op_class, Py_None, &ev, anomalies, key);
    if (result == NULL)
        goto done;
    if (hello ? PyObject_SetAttr(state, S_hello_pending, Py_False) < 0
              : (key != Py_None && PyDict_DelItem(pending, key) < 0))
        Py_CLEAR(result);
done:
    Py_XDECREF(hp);
    Py_XDECREF(reason);
    Py_XDECREF(pending);
    Py_XDECREF(key);
    Py_XDECREF(op_class);
    Py_XDECREF(anomalies);
    ev_clear(&ev);
    return otsec_one_event(result);
}

PyObject *
otsec_opcua_decode(PyObject *msg, int from_client, PyObject *state)
{
    if (!PyBytes_Check(msg) || state == Py_None)
        Py_RETURN_NOTIMPLEMENTED;
    Buf M = {(const unsigned char *)PyBytes_AS_STRING(msg), PyBytes_GET_SIZE(msg)};
    if (M.n < 8 || M.b[3] != 'F' || le32(M.b + 4) != (uint64_t)M.n)
        Py_RETURN_NOTIMPLEMENTED;
    const char *t = (const char *)M.b;
    int kind = !memcmp(t, "MSG", 3) ? 1 : !memcmp(t, "CLO", 3) ? 2 : !memcmp(t, "OPN", 3) ? 3
             : !memcmp(t, "HEL", 3) ? 4 : !memcmp(t, "ACK", 3) ? 5 : !memcmp(t, "ERR", 3) ? 6 : 0;
    long minimum = kind == 1 || kind == 2 ? MIN_MSG : kind == 3 ? MIN_OPN
                 : kind == 4 ? MIN_HEL : kind == 5 ? MIN_ACK : MIN_ERR;
    if (kind == 0 || M.n < minimum)
        Py_RETURN_NOTIMPLEMENTED;
    if (kind == 6)
        return error_message(&M, state);
    if (kind >= 4)
        return handshake(&M, kind == 4, state);
    PyObject *rev = PyObject_GetAttr(state, S_reverse);
    if (rev == NULL)
        return NULL;
    int reverse = PyObject_IsTrue(rev);
    Py_DECREF(rev);
    if (reverse < 0)
        return NULL;
    int ua_client = from_client != reverse;
    if (kind == 3)
        return open_channel(&M, ua_client, state);
    return symmetric(&M, kind == 1 ? S_MSG : S_CLO, kind == 1, ua_client, state);
}

/* ---- init ----------------------------------------------------------------------------------- */

static PyObject *
get(PyObject *module, const char *name)
{
    return PyObject_GetAttrString(module, name);
}

static int
get_size(PyObject *module, const char *name, Py_ssize_t *out)
{
    PyObject *v = get(module, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
min_size(PyObject *sizes, const char *mtype, long *out)
{
    PyObject *key = PyBytes_FromString(mtype);
    if (key == NULL)
        return -1;
    PyObject *v = PyDict_GetItemWithError(sizes, key);
    Py_DECREF(key);
    if (v == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_RuntimeError, "opcua twin: no MIN_CHUNK_SIZE for %s", mtype);
        return -1;
    }
    *out = PyLong_AsLong(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* For the twins of opcua.frame and opcua.probe: the message types (MIN_CHUNK_SIZE's keys)
 * with their minimum sizes and whether they are single-chunk types, the chunk types and
 * the size bounds, from the Python module. */
static char FRAME_TYPES[16][3];
static long FRAME_MIN_SIZE[16];
static int FRAME_SINGLE[16];
static int n_frame_types;
static unsigned char FRAME_CHUNK[256];
static Py_ssize_t FRAME_HEADER_LEN, FRAME_MAX_SIZE;

static int
init_framing(PyObject *module, PyObject *sizes, PyObject *singles)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    n_frame_types = 0;
    while (PyDict_Next(sizes, &pos, &k, &v)) {
        if (!PyBytes_Check(k) || PyBytes_GET_SIZE(k) != 3 || n_frame_types == 16) {
            PyErr_SetString(PyExc_RuntimeError, "opcua twin: MIN_CHUNK_SIZE changed");
            return -1;
        }
        memcpy(FRAME_TYPES[n_frame_types], PyBytes_AS_STRING(k), 3);
        FRAME_MIN_SIZE[n_frame_types] = PyLong_AsLong(v);
        if (FRAME_MIN_SIZE[n_frame_types] == -1 && PyErr_Occurred())
            return -1;
        int single = PySequence_Contains(singles, k);
        if (single < 0)
            return -1;
        FRAME_SINGLE[n_frame_types++] = single;
    }
    PyObject *chunks = get(module, "CHUNK_TYPES");
    if (chunks == NULL)
        return -1;
    PyObject *it = PyObject_GetIter(chunks);
    Py_DECREF(chunks);
    if (it == NULL)
        return -1;
    while ((v = PyIter_Next(it)) != NULL) {
        long c = PyLong_AsLong(v);
        Py_DECREF(v);
        if (c < 0 || c > 255) {
            Py_DECREF(it);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "opcua twin: CHUNK_TYPES changed");
            return -1;
        }
        FRAME_CHUNK[c] = 1;
    }
    Py_DECREF(it);
    if (PyErr_Occurred() || get_size(module, "HEADER_LEN", &FRAME_HEADER_LEN) < 0 ||
        get_size(module, "MAX_CHUNK_SIZE", &FRAME_MAX_SIZE) < 0)
        return -1;
    return 0;
}

/* The index of a message type in FRAME_TYPES, or -1. */
static int
frame_type(const unsigned char *p)
{
    for (int i = 0; i < n_frame_types; i++)
        if (memcmp(FRAME_TYPES[i], p, 3) == 0)
            return i;
    return -1;
}

static int
frame_type_known(const unsigned char *p)
{
    return frame_type(p) >= 0;
}

/* The twin of opcua.probe: a known message type, a chunk type allowed for it and a
 * plausible size; HEL and ACK must also announce protocol version 0. */
int
otsec_opcua_probe(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
{
    if (pos < 0 || len - pos < FRAME_HEADER_LEN)
        return 0;
    const unsigned char *p = buf + pos;
    int type = frame_type(p);
    uint32_t size = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
    if (type < 0 || size < (uint32_t)FRAME_MIN_SIZE[type] || size > (uint64_t)FRAME_MAX_SIZE)
        return 0;
    if (!FRAME_SINGLE[type])
        return FRAME_CHUNK[p[3]];
    if (p[3] != 'F')
        return 0;
    if (memcmp(p, "HEL", 3) == 0 || memcmp(p, "ACK", 3) == 0)
        return len - pos >= 12 && !p[8] && !p[9] && !p[10] && !p[11];
    return 1;
}

/* The twin of opcua.frame (the reference): the chunk's declared size; a prefix that
 * already contradicts a header is UNFRAMEABLE (-1); NEED_MORE is 0. */
Py_ssize_t
otsec_opcua_frame(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
{
    Py_ssize_t avail = len - pos;
    if (avail >= FRAME_HEADER_LEN) {
        const unsigned char *p = buf + pos;
        Py_ssize_t size = (Py_ssize_t)((uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                                       (uint32_t)p[7] << 24);
        if (!frame_type_known(p) || !FRAME_CHUNK[p[3]] || size < FRAME_HEADER_LEN || size > FRAME_MAX_SIZE)
            return -1;
        return avail >= size ? size : 0;
    }
    if (avail >= 3 && !frame_type_known(buf + pos))
        return -1;
    if (avail >= 4 && !FRAME_CHUNK[buf[pos + 3]])
        return -1;
    return 0;
}

static int
load_statuses(PyObject *codes)
{
    n_status = PyDict_GET_SIZE(codes);
    status_codes = PyMem_Calloc(n_status ? n_status : 1, sizeof *status_codes);
    status_names = PyMem_Calloc(n_status ? n_status : 1, sizeof *status_names);
    if (status_codes == NULL || status_names == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (PyDict_Next(codes, &pos, &k, &v)) {        /* insertion sort: a few hundred */
        unsigned long code = PyLong_AsUnsignedLong(k);
        if (code == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        Py_ssize_t j = i++;
        while (j > 0 && status_codes[j - 1] > code) {
            status_codes[j] = status_codes[j - 1];
            status_names[j] = status_names[j - 1];
            j--;
        }
        status_codes[j] = (uint32_t)code;
        status_names[j] = Py_NewRef(v);
    }
    return 0;
}

static int
load_services(PyObject *info, PyObject *bodies)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    n_services = 0;
    while (PyDict_Next(info, &pos, &k, &v)) {
        long sid = PyLong_AsLong(k);
        if (sid < 0 || sid > 1000000) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "opcua twin: odd service id");
            return -1;
        }
        if (sid + 1 > n_services)
            n_services = sid + 1;
    }
    services = PyMem_Calloc(n_services ? n_services : 1, sizeof *services);
    if (services == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pos = 0;
    while (PyDict_Next(info, &pos, &k, &v)) {
        Service *s = &services[PyLong_AsLong(k)];
        if (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 4) {
            PyErr_SetString(PyExc_RuntimeError, "opcua twin: _SERVICE_INFO changed shape");
            return -1;
        }
        s->name = Py_NewRef(PyTuple_GET_ITEM(v, 0));
        s->is_request = PyObject_IsTrue(PyTuple_GET_ITEM(v, 1)) == 1;
        s->function = Py_NewRef(PyTuple_GET_ITEM(v, 2));
        s->op_class = PyTuple_GET_ITEM(v, 3) == Py_None ? NULL
                                                       : Py_NewRef(PyTuple_GET_ITEM(v, 3));
        s->known = 1;
        int has = PyDict_Contains(bodies, k);
        if (has < 0)
            return -1;
        s->has_body = (char)has;
    }
    return 0;
}

int
otsec_opcua_init(void)
{
#define INTERN(s) if ((S_##s = PyUnicode_InternFromString(#s)) == NULL) return -1;
    STRINGS(INTERN)
#undef INTERN
    if ((S_encrypted_message = PyUnicode_InternFromString("Encrypted message")) == NULL ||
        (S_unknown_service = PyUnicode_InternFromString("Unknown service")) == NULL)
        return -1;
    PyObject *mod = PyImport_ImportModule("otsec.decoders.opcua");
    PyObject *enc = PyImport_ImportModule("otsec.decoders.opcua_encoding");
    PyObject *sizes = NULL, *codes = NULL, *info = NULL, *bodies = NULL, *builtins = NULL, *singles = NULL;
    int rc = -1;
    if (mod == NULL || enc == NULL)
        goto done;
    if ((Channel_cls = get(mod, "_Channel")) == NULL ||
        (thumbprint_fn = get(mod, "_thumbprint")) == NULL ||
        (PROTOCOL = get(mod, "PROTOCOL")) == NULL || (HELLO_KEY = get(mod, "HELLO_KEY")) == NULL ||
        (NONE_POLICY = get(mod, "_NONE_POLICY")) == NULL ||
        (CLEARTEXT_UNKNOWN = get(mod, "_CLEARTEXT_UNKNOWN")) == NULL ||
        (POLICY_PREFIX = get(enc, "POLICY_PREFIX")) == NULL ||
        (A_UNKNOWN_CHANNEL = get(mod, "A_UNKNOWN_CHANNEL")) == NULL ||
        (A_UNKNOWN_SERVICE = get(mod, "A_UNKNOWN_SERVICE")) == NULL ||
        (A_UNSUPPORTED_VERSION = get(mod, "A_UNSUPPORTED_VERSION")) == NULL ||
        (TWO_BYTE_IDS = get(enc, "_TWO_BYTE_IDS")) == NULL ||
        (ATTRIBUTES = get(enc, "ATTRIBUTES")) == NULL ||
        (NODE_CLASSES = get(enc, "NODE_CLASSES")) == NULL ||
        (MESSAGE_SECURITY_MODES = get(enc, "MESSAGE_SECURITY_MODES")) == NULL ||
        (APPLICATION_TYPES = get(enc, "APPLICATION_TYPES")) == NULL ||
        (USER_TOKEN_TYPES = get(enc, "USER_TOKEN_TYPES")) == NULL ||
        (SECURITY_TOKEN_REQUEST_TYPES = get(enc, "SECURITY_TOKEN_REQUEST_TYPES")) == NULL ||
        (IDENTITY_TOKENS = get(enc, "IDENTITY_TOKENS")) == NULL ||
        get_size(mod, "MAX_ITEMS", &MAX_ITEMS) < 0 ||
        get_size(mod, "MAX_ENDPOINTS", &MAX_ENDPOINTS) < 0 ||
        get_size(mod, "MAX_CHANNELS", &MAX_CHANNELS) < 0 ||
        get_size(mod, "MAX_PENDING_REQUESTS", &MAX_PENDING) < 0 ||
        get_size(enc, "MAX_TEXT", &MAX_TEXT) < 0 ||
        get_size(enc, "MAX_NESTING", &MAX_NESTING) < 0 ||
        (sizes = get(mod, "MIN_CHUNK_SIZE")) == NULL || (codes = get(enc, "STATUS_CODES")) == NULL ||
        (info = get(mod, "_SERVICE_INFO")) == NULL || (bodies = get(mod, "BODY_DECODERS")) == NULL ||
        (builtins = get(enc, "BUILTIN_TYPES")) == NULL)
        goto done;
    if (!PyTuple_Check(TWO_BYTE_IDS) || PyTuple_GET_SIZE(TWO_BYTE_IDS) != 256 ||
        !PyDict_Check(sizes) || !PyDict_Check(codes) || !PyDict_Check(info) ||
        !PyDict_Check(bodies) || !PyDict_Check(builtins) || !PyDict_Check(ATTRIBUTES) ||
        !PyDict_Check(APPLICATION_TYPES) || !PyDict_Check(USER_TOKEN_TYPES) ||
        !PyDict_Check(MESSAGE_SECURITY_MODES) || !PyDict_Check(IDENTITY_TOKENS) || !PyDict_Check(SECURITY_TOKEN_REQUEST_TYPES) ||
        MAX_ITEMS < 0 || MAX_ITEMS > 64 || MAX_TEXT < 0) {
        PyErr_SetString(PyExc_RuntimeError, "opcua twin: the Python decoder's tables changed shape");
        goto done;
    }
    if (min_size(sizes, "MSG", &MIN_MSG) < 0 || min_size(sizes, "OPN", &MIN_OPN) < 0 ||
        min_size(sizes, "HEL", &MIN_HEL) < 0 || min_size(sizes, "ACK", &MIN_ACK) < 0 ||
        min_size(sizes, "ERR", &MIN_ERR) < 0)
        goto done;
    /* the fixed offsets read without checks assume the documented minimum sizes */
    if (MIN_MSG < 24 || MIN_OPN < 12 || MIN_HEL < 32 || MIN_ACK < 28 || MIN_ERR < 12) {
        PyErr_SetString(PyExc_RuntimeError, "opcua twin: MIN_CHUNK_SIZE changed");
        goto done;
    }
    for (int t = 1; t <= 25; t++) {
        PyObject *key = PyLong_FromLong(t), *v;
        if (key == NULL)
            goto done;
        v = PyDict_GetItemWithError(builtins, key);
        Py_DECREF(key);
        if (v == NULL || !PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 2) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "opcua twin: BUILTIN_TYPES changed");
            goto done;
        }
        BUILTIN_NAMES[t] = Py_NewRef(PyTuple_GET_ITEM(v, 0));
        PyObject *size = PyTuple_GET_ITEM(v, 1);
        BUILTIN_SIZE[t] = (signed char)(size == Py_None ? -1 : PyLong_AsLong(size));
    }
    if (PyDict_GET_SIZE(builtins) != 25 || load_statuses(codes) < 0 ||
        load_services(info, bodies) < 0 || (singles = get(mod, "SINGLE_CHUNK_TYPES")) == NULL ||
        init_framing(mod, sizes, singles) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "opcua twin: BUILTIN_TYPES changed");
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(mod);
    Py_XDECREF(enc);
    Py_XDECREF(sizes);
    Py_XDECREF(codes);
    Py_XDECREF(info);
    Py_XDECREF(bodies);
    Py_XDECREF(builtins);
    Py_XDECREF(singles);
    return rc;
}
