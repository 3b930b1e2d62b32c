/* The compiled flow layer: the C twin of otsec/flow/table.py, reassembly.py and session.py.
 *
 * The Python modules are the reference: this file does exactly what they do, in the same
 * order, so that both give identical events, flows and counters (tests/test_flow_table.py
 * runs its cases on both, tests/test_flow_compiled_equivalence.py compares them on every
 * corpus capture and on random packet sequences). What it changes is where the work
 * happens: packet parsing, the connection index, TCP reassembly, framing and event context
 * run on C structs (a new connection's Flow record in _newflow.h), and Python is called
 * only for what stays in Python:
 *
 *   detect()    which decoder a new connection speaks (the decoders' probes)
 *   decoder.frame / probe / decode, and the on_event / on_flow callbacks.
 *
 * Per connection (Conn), both directions share one entry reached from two index slots
 * (client->server and server->client keys), as in table.py. Bounds on memory are the
 * Python ones (the constants are read from the Python modules at import).
 *
 * Lifetime: a connection that ends is unlinked at once but freed only when the call that
 * ended it returns (the Python code may go on using its state in the same packet).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_parse.h"
#include "_cdecode.h"

#define TCP 6
#define FIN 0x01
#define SYN 0x02
#define RST 0x04
#define ACK 0x10

#include "_newflow.h"

/* Limits, read from the Python modules at import so that both twins share one value. */
static long DETECTION_ATTEMPTS, DETECTION_WINDOW, MAX_MESSAGE_AWAITED, MAX_HELD_SEGMENTS;
static double CLOSED_LINGER, SWEEP_INTERVAL;
static long MAX_QUEUED_SEGMENTS, MAX_QUEUED_BYTES;
static Py_ssize_t MAX_BUFFERED_BYTES, SYNC_TAIL, MAX_PENDING_REQUESTS;
static long DEFAULT_MAX_FLOWS;
static double DEFAULT_TCP_IDLE, DEFAULT_UDP_IDLE;

/* Python helpers shared with table.py */
static PyObject *py_detect, *py_port_maps;

/* The Python decode functions that have a compiled twin (otsec/decoders/_<name>.c). */
static struct {
    const char *module;
    cdecode_fn twin;
    cframe_fn frame_twin;
    cprobe_fn probe_twin;
    PyObject *decode, *frame, *probe;
} TWINS[] = {
    {"otsec.decoders.modbus", otsec_modbus_decode, otsec_modbus_frame, otsec_modbus_probe},
    {"otsec.decoders.s7comm", otsec_s7comm_decode, otsec_s7comm_frame, otsec_s7comm_probe},
    {"otsec.decoders.opcua", otsec_opcua_decode, otsec_opcua_frame, otsec_opcua_probe},
};
#define N_TWINS (sizeof(TWINS) / sizeof(TWINS[0]))
static PyObject *EMPTY_BYTES;

/* interned attribute names */
static PyObject *S_capture, *S_flow_id, *S_src_ip, *S_src_port, *S_src_mac, *S_dst_ip,
    *S_dst_port, *S_dst_mac, *S_packet, *S_ts, *S_protocol, *S_pair_key, *S_kind,
    *S_anomalies, *S_request_packet, *S_targets, *S_request, *S_response, *S_name,
    *S_probe, *S_frame, *S_decode, *S_new_state, *S_decoded, *S_app, *S_client_ip,
    *S_server_ip, *S_client_port, *S_server_port, *S_last_ts, *S_last_packet,
    *S_packets_c2s, *S_packets_s2c, *S_bytes_c2s, *S_bytes_s2c, *S_client_mac,
    *S_server_mac, *S_events, *S_gaps, *S_tcp_overlap, *S_messages, *S_anomalous,
    *S_h_gaps, *S_resyncs, *S_unframeable_bytes, *S_buffer_overflows,
    *S_unpaired_responses, *S_unanswered_requests, *S_truncated_at_eof,
    *S_decoder_errors, *S_flows, *S_flows_timed_out, *S_flows_evicted,
    *S_retransmitted_bytes, *S_overlap_conflicts, *S_gap_bytes, *S_append, *S_detail_dot;

/* ---------------------------------------------------------------------------------- */
/* small helpers                                                                        */

/* An event's field, a new reference: straight from its slot when it is a model.Event (the
 * generic attribute lookup costs more than the rest of the work on most fields). */
static PyObject *
ev_get(PyObject *ev, int field, PyObject *name)
{
    if (Py_IS_TYPE(ev, otsec_Event) && *otsec_event_field(ev, field) != NULL)
        return Py_NewRef(*otsec_event_field(ev, field));
    return PyObject_GetAttr(ev, name);
}

/* Set an event's field (v borrowed), as setattr does. */
static int
ev_set(PyObject *ev, int field, PyObject *name, PyObject *v)
{
    if (Py_IS_TYPE(ev, otsec_Event)) {
        Py_XSETREF(*otsec_event_field(ev, field), Py_NewRef(v));
        return 0;
    }
    return PyObject_SetAttr(ev, name, v);
}

static int
as_int(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v > INT_MAX || v < INT_MIN) {
        PyErr_SetString(PyExc_OverflowError, "value out of range");
        return -1;
    }
    return (int)v;
}

/* obj.name += n for an int attribute (Health counters, Flow counters at the end). */
static int
attr_add(PyObject *obj, PyObject *name, long long n)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    PyObject *d = PyLong_FromLongLong(n);
    if (d == NULL) {
        Py_DECREF(v);
        return -1;
    }
    PyObject *s = PyNumber_Add(v, d);
    Py_DECREF(v);
    Py_DECREF(d);
    if (s == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, s);
    Py_DECREF(s);
    return r;
}

/* d[name] += n for the table's counters dict. */
static int
dict_add(PyObject *d, PyObject *name, long long n)
{
    if (n == 0)   /* every counter is there from the start */
        return 0;
    PyObject *v = PyDict_GetItemWithError(d, name);
    if (v == NULL && PyErr_Occurred())
        return -1;
    PyObject *o = PyLong_FromLongLong((v ? PyLong_AsLongLong(v) : 0) + n);
    if (o == NULL)
        return -1;
    int r = PyDict_SetItem(d, name, o);
    Py_DECREF(o);
    return r;
}

/* mac_text(): "aa:bb:cc:dd:ee:ff" */
static PyObject *
mac_text(const unsigned char *mac)
{
    static const char hex[] = "0123456789abcdef";
    char out[17];
    for (int i = 0; i < 6; i++) {
        out[i * 3] = hex[mac[i] >> 4];
        out[i * 3 + 1] = hex[mac[i] & 15];
        if (i < 5)
            out[i * 3 + 2] = ':';
    }
    return shared_text(PyUnicode_FromStringAndSize(out, 17));
}

/* Signed distance a - b in sequence space (reassembly.seq_diff). */
static inline int64_t
seq_diff(uint32_t a, uint32_t b)
{
    uint32_t d = a - b;
    return d >= 0x80000000u ? (int64_t)d - 0x100000000LL : (int64_t)d;
}

/* ---------------------------------------------------------------------------------- */
/* Bounds: (end offset, packet, ts) of each segment joined into released data           */

typedef struct {
    Py_ssize_t end;
    long long packet;
    double ts;
} Bound;

typedef struct {
    Bound *v;
    Py_ssize_t n, cap;
} Bounds;

static int
bounds_push(Bounds *b, Py_ssize_t end, long long packet, double ts)
{
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 8;
        Bound *v = PyMem_Realloc(b->v, cap * sizeof(Bound));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n].end = end;
    b->v[b->n].packet = packet;
    b->v[b->n].ts = ts;
    b->n++;
    return 0;
}

static void
bounds_free(Bounds *b)
{
    PyMem_Free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}

/* ---------------------------------------------------------------------------------- */
/* Stream: one TCP direction (reassembly.Stream)                                       */

typedef struct {
    uint32_t seq;
    PyObject *data;     /* bytes */
    long long packet;   /* arrival: the packet that brought the segment's last byte */
    double ts;
} Seg;

typedef struct {
    int has_next;
    uint32_t next_seq;
    Seg *queue;         /* in insertion order, like the Python dict */
    Py_ssize_t qlen, qcap;
    Py_ssize_t queued_bytes;
    long long gaps, gap_bytes, overlap_conflicts, retransmitted_bytes;
    int gapped;
    Bounds bounds;      /* n 0: Python's None (data released from the queue lists >= 1) */
} Stream;

static void
stream_free(Stream *s)
{
    for (Py_ssize_t i = 0; i < s->qlen; i++)
        Py_DECREF(s->queue[i].data);
    PyMem_Free(s->queue);
    s->queue = NULL;
    s->qlen = s->qcap = 0;
    bounds_free(&s->bounds);
}

static Py_ssize_t
stream_find(Stream *s, uint32_t seq)
{
    for (Py_ssize_t i = 0; i < s->qlen; i++)
        if (s->queue[i].seq == seq)
            return i;
    return -1;
}

/* remove queue[i], keeping the order of the rest; the caller owns the data reference */
static Seg
stream_take(Stream *s, Py_ssize_t i)
{
    Seg seg = s->queue[i];
    memmove(s->queue + i, s->queue + i + 1, (s->qlen - i - 1) * sizeof(Seg));
    s->qlen--;
    return seg;
}

static void
stream_syn(Stream *s, uint32_t seq)
{
    if (!s->has_next) {
        s->has_next = 1;
        s->next_seq = seq + 1;
    }
}

static int
stream_enqueue(Stream *s, uint32_t seq, PyObject *data, long long packet, double ts)
{
    Py_ssize_t i = stream_find(s, seq);
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (i >= 0) {
        PyObject *held = s->queue[i].data;
        Py_ssize_t hlen = PyBytes_GET_SIZE(held);
        const char *h = PyBytes_AS_STRING(held), *d = PyBytes_AS_STRING(data);
        if (hlen >= len) {
            if (memcmp(h, d, len) != 0)
                s->overlap_conflicts++;
            s->retransmitted_bytes += len;
            return 0;
        }
        if (memcmp(d, h, hlen) != 0)
            s->overlap_conflicts++;
        /* first copy wins for the bytes it covered */
        PyObject *joined = PyBytes_FromStringAndSize(NULL, len);
        if (joined == NULL)
            return -1;
        memcpy(PyBytes_AS_STRING(joined), h, hlen);
        memcpy(PyBytes_AS_STRING(joined) + hlen, d + hlen, len - hlen);
        s->queued_bytes -= hlen;
        Py_DECREF(held);
        s->queue[i].data = joined;
        s->queue[i].packet = packet;
        s->queue[i].ts = ts;
        s->queued_bytes += len;
        return 0;
    }
    if (s->qlen == s->qcap) {
        Py_ssize_t cap = s->qcap ? s->qcap * 2 : 4;
        Seg *q = PyMem_Realloc(s->queue, cap * sizeof(Seg));
        if (q == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->queue = q;
        s->qcap = cap;
    }
    Py_INCREF(data);
    s->queue[s->qlen].seq = seq;
    s->queue[s->qlen].data = data;
    s->queue[s->qlen].packet = packet;
    s->queue[s->qlen].ts = ts;
    s->qlen++;
    s->queued_bytes += len;
    return 0;
}

/* _pop_overlapping: a queued segment starting before the head; 0 found, 1 none, -1 error */
static int
stream_pop_overlapping(Stream *s, Seg *out)
{
    Py_ssize_t i = 0;
    while (i < s->qlen) {
        int64_t d = seq_diff(s->queue[i].seq, s->next_seq);
        if (d < 0) {
            Seg seg = stream_take(s, i);
            Py_ssize_t len = PyBytes_GET_SIZE(seg.data);
            s->queued_bytes -= len;
            if (-d < len) {
                s->retransmitted_bytes += -d;
                PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(seg.data) + (-d), len + d);
                Py_DECREF(seg.data);
                if (rest == NULL)
                    return -1;
                seg.data = rest;
                *out = seg;
                return 0;
            }
            s->retransmitted_bytes += len;
            Py_DECREF(seg.data);
            continue;
        }
        i++;
    }
    return 1;
}

/* _drain: append every queued segment that touches the head to parts (and bounds). */
static PyObject *
stream_drain(Stream *s, PyObject *parts)
{
    Py_ssize_t size = s->bounds.n ? s->bounds.v[s->bounds.n - 1].end : 0;
    while (s->qlen) {
        Seg seg;
        Py_ssize_t i = stream_find(s, s->next_seq);
        if (i >= 0) {
            seg = stream_take(s, i);
            s->queued_bytes -= PyBytes_GET_SIZE(seg.data);
        } else {
            int r = stream_pop_overlapping(s, &seg);
            if (r < 0)
                return NULL;
            if (r == 1)
                break;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(seg.data);
        size += len;
        if (bounds_push(&s->bounds, size, seg.packet, seg.ts) < 0 || PyList_Append(parts, seg.data) < 0) {
            Py_DECREF(seg.data);
            return NULL;
        }
        Py_DECREF(seg.data);
        s->next_seq += (uint32_t)len;
    }
    return _PyBytes_Join(EMPTY_BYTES, parts);
}

/* skip_gap: give up on the current hole, jump to the first queued segment, drain. */
static PyObject *
stream_skip_gap(Stream *s)
{
    if (!s->qlen) {
        Py_INCREF(EMPTY_BYTES);
        return EMPTY_BYTES;
    }
    Py_ssize_t best = 0;
    int64_t best_d = seq_diff(s->queue[0].seq, s->next_seq);
    for (Py_ssize_t i = 1; i < s->qlen; i++) {
        int64_t d = seq_diff(s->queue[i].seq, s->next_seq);
        if (d < best_d) {
            best = i;
            best_d = d;
        }
    }
    s->gaps++;
    s->gap_bytes += best_d > 0 ? best_d : 0;
    s->next_seq = s->queue[best].seq;
    s->bounds.n = 0;
    PyObject *parts = PyList_New(0);
    if (parts == NULL)
        return NULL;
    PyObject *out = stream_drain(s, parts);
    Py_DECREF(parts);
    s->gapped = 1;
    return out;
}

/* push: add a segment; return the bytes that became contiguous (maybe empty). */
static PyObject *
stream_push(Stream *s, uint32_t seq, PyObject *data, long long packet, double ts)
{
    s->gapped = 0;
    s->bounds.n = 0;
    if (!s->has_next) {
        s->has_next = 1;
        s->next_seq = seq;
    }
    int64_t d = seq_diff(seq, s->next_seq);
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (d == 0 && !s->qlen) {
        s->next_seq = seq + (uint32_t)len;
        Py_INCREF(data);
        return data;
    }
    PyObject *own = data;
    Py_INCREF(own);
    if (d < 0) {
        if (-d >= len) {
            s->retransmitted_bytes += len;
            Py_DECREF(own);
            Py_INCREF(EMPTY_BYTES);
            return EMPTY_BYTES;
        }
        s->retransmitted_bytes += -d;
        Py_DECREF(own);
        own = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + (-d), len + d);
        if (own == NULL)
            return NULL;
        len = PyBytes_GET_SIZE(own);
        seq = s->next_seq;
        d = 0;
    }
    if (d == 0) {
        s->next_seq = seq + (uint32_t)len;
        if (!s->qlen)
            return own;
        if (bounds_push(&s->bounds, len, packet, ts) < 0) {
            Py_DECREF(own);
            return NULL;
        }
        PyObject *parts = PyList_New(1);
        if (parts == NULL) {
            Py_DECREF(own);
            return NULL;
        }
        PyList_SET_ITEM(parts, 0, own);
        PyObject *out = stream_drain(s, parts);
        Py_DECREF(parts);
        return out;
    }
    int r = stream_enqueue(s, seq, own, packet, ts);
    Py_DECREF(own);
    if (r < 0)
        return NULL;
    if (s->qlen > MAX_QUEUED_SEGMENTS || s->queued_bytes > MAX_QUEUED_BYTES)
        return stream_skip_gap(s);
    Py_INCREF(EMPTY_BYTES);
    return EMPTY_BYTES;
}

/* acked: the peer acknowledged up to ack; a queued hole below it is given up. */
static PyObject *
stream_acked(Stream *s, uint32_t ack)
{
    if (s->qlen && s->has_next && seq_diff(ack, s->next_seq) > 0)
        return stream_skip_gap(s);
    Py_INCREF(EMPTY_BYTES);
    return EMPTY_BYTES;
}

/* ---------------------------------------------------------------------------------- */
/* Session: one decoder over one connection (session.Session)                          */

typedef struct {
    PyObject *probe, *frame, *decode, *state;
    cdecode_fn cdecode;  /* the decoder's compiled twin, tried first; NULL: none */
    cframe_fn cframe;    /* the twin of its frame(); NULL: none */
    PyObject *bufs[2];   /* index 1: client -> server (the decoder's client) */
    int syncing[2];
    PyObject *pending;   /* dict: pair key -> request event */
    PyObject *protocols; /* set */
} Session;

static void
session_free(Session *ss)
{
    if (ss == NULL)
        return;
    Py_XDECREF(ss->probe);
    Py_XDECREF(ss->frame);
    Py_XDECREF(ss->decode);
    Py_XDECREF(ss->state);
    Py_XDECREF(ss->bufs[0]);
    Py_XDECREF(ss->bufs[1]);
    Py_XDECREF(ss->pending);
    Py_XDECREF(ss->protocols);
    PyMem_Free(ss);
}

static Session *
session_new(PyObject *decoder)
{
    Session *ss = PyMem_Calloc(1, sizeof(Session));
    if (ss == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (!(ss->probe = PyObject_GetAttr(decoder, S_probe)) ||
        !(ss->frame = PyObject_GetAttr(decoder, S_frame)) ||
        !(ss->decode = PyObject_GetAttr(decoder, S_decode)))
        goto fail;
    PyObject *new_state = PyObject_GetAttr(decoder, S_new_state);
    if (new_state == NULL)
        goto fail;
    ss->state = PyObject_CallNoArgs(new_state);
    Py_DECREF(new_state);
    if (ss->state == NULL)
        goto fail;
    for (size_t k = 0; k < N_TWINS; k++) {
        if (TWINS[k].decode == ss->decode)
            ss->cdecode = TWINS[k].twin;
        if (TWINS[k].frame == ss->frame)
            ss->cframe = TWINS[k].frame_twin;
    }
    Py_INCREF(EMPTY_BYTES);
    ss->bufs[0] = EMPTY_BYTES;
    Py_INCREF(EMPTY_BYTES);
    ss->bufs[1] = EMPTY_BYTES;
    ss->syncing[0] = ss->syncing[1] = 1;
    if (!(ss->pending = PyDict_New()) || !(ss->protocols = PySet_New(NULL)))
        goto fail;
    return ss;
fail:
    session_free(ss);
    return NULL;
}

/* call_frame's answer when frame() raised (every other answer is >= -1). */
#define FRAME_FAILED PY_SSIZE_T_MIN

/* frame(buf, pos): the message length, 0 (NEED_MORE), -1 for any negative answer
 * (UNFRAMEABLE, as the Python session reads it), or FRAME_FAILED. An answer too large for
 * a Py_ssize_t counts as PY_SSIZE_T_MAX (the caller clamps it to the bytes at hand). */
static Py_ssize_t
call_frame(Session *ss, PyObject *buf, Py_ssize_t pos)
{
    Py_ssize_t n;
    if (ss->cframe != NULL) {
        n = ss->cframe((const unsigned char *)PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), pos);
    } else {
        PyObject *p = PyLong_FromSsize_t(pos);
        if (p == NULL)
            return FRAME_FAILED;
        PyObject *args[2] = {buf, p};
        PyObject *r = PyObject_Vectorcall(ss->frame, args, 2, NULL);
        Py_DECREF(p);
        if (r == NULL)
            return FRAME_FAILED;
        n = PyLong_AsSsize_t(r);
        if (n == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                Py_DECREF(r);
                return FRAME_FAILED;
            }
            PyErr_Clear();
            n = _PyLong_Sign(r) < 0 ? -1 : PY_SSIZE_T_MAX;
        }
        Py_DECREF(r);
    }
    return n < 0 ? -1 : n;
}

/* probe(buf, pos) -> 0/1; -1 on a Python error */
static int
call_probe(PyObject *probe, PyObject *buf, Py_ssize_t pos)
{
    PyObject *p = PyLong_FromSsize_t(pos);
    if (p == NULL)
        return -1;
    PyObject *args[2] = {buf, p};
    PyObject *r = PyObject_Vectorcall(probe, args, 2, NULL);
    Py_DECREF(p);
    if (r == NULL)
        return -1;
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

/* A decoder's probe(buf, pos): its compiled twin where it has one that decides, else the
 * Python function. 1/0, -1 on a Python error. */
static int
probe_at(PyObject *probe, PyObject *buf, Py_ssize_t pos)
{
    for (size_t k = 0; k < N_TWINS && PyBytes_CheckExact(buf); k++) {
        if (TWINS[k].probe != probe)
            continue;
        int r = TWINS[k].probe_twin((const unsigned char *)PyBytes_AS_STRING(buf),
                                    PyBytes_GET_SIZE(buf), pos);
        if (r != OTSEC_PROBE_UNSURE)
            return r;
        break;
    }
    return call_probe(probe, buf, pos);
}

/* --- events counted by key (FlowTable.tally_by) -----------------------------------------
 * The twin of otsec.analysis.tally.Tally.counter: an aggregator such as the analyze
 * summary counts each event under a few keys (tuples of the event's values) in one dict
 * per key. Counted here, an event costs one probe per key into a C hash table of the keys
 * seen (hashed and compared value by value, so a key's tuple is built only the first time)
 * and a C counter; no Python call. The slots' counts are added to the aggregator's dicts
 * (into[key] = into.get(key, 0) + n) when the slots run out and at finish. An event with
 * an "apart" field set is also handed to add_apart(event); one that is not a model.Event,
 * or whose detail is not a dict, to add_item(event) instead of being counted here. Flows
 * are counted the same way (by their fields only), in a tally of their own. */
#define TALLY_MAX_KEYS 8
#define TALLY_MAX_SLOTS (1 << 24)
enum { TALLY_EVENTS, TALLY_FLOWS };
#define TALLY_MAX_NAMES 16
enum { TALLY_BY_CLIENT = -1, TALLY_DETAIL = -2 };

typedef struct {
    int field[TALLY_MAX_NAMES];          /* EV_..., TALLY_BY_CLIENT or TALLY_DETAIL */
    PyObject *entry[TALLY_MAX_NAMES];    /* for TALLY_DETAIL: the detail entry's name */
    int n;
    int when_field;                      /* EV_... the key's condition reads, or -1: none */
    PyObject *when_value;                /* counted only where that field equals this */
    PyObject *into;                      /* the aggregator's dict for this key */
    struct TallyEntry *table;            /* open addressing, 2 x limit entries, by value hash */
    size_t mask;
} TallyKey;

typedef struct TallyEntry {
    Py_hash_t hash;                      /* of the key's values (tally_hash) */
    Py_ssize_t slot;                     /* its slot; -1: the entry is free */
} TallyEntry;

typedef struct {
    PyTypeObject *type;                  /* model.Event or model.Flow: what is counted */
    const Py_ssize_t *offset;            /* its slots (otsec_event_offset, otsec_flow_offset) */
    int (*index_of)(PyObject *name);     /* its field names */
    TallyKey key[TALLY_MAX_KEYS];
    int nkeys, needs_detail;
    int apart[EV_FIELDS], napart;
    PyObject *add_apart, *add_item;      /* NULL: nothing is counted here */
    PyObject *server_ports;              /* protocol -> frozenset of its server ports */
    PyObject *ports_known;               /* protocol -> server_ports(protocol), as asked */
    PyObject **keys;                     /* per slot: its key (new reference) */
    long long *counts;
    int *owner;                          /* per slot: the index of its TallyKey */
    Py_ssize_t used, limit;
} Tally;

/* Add every slot's count to its key's dict and start afresh (also on error). */
static int
tally_flush(Tally *t)
{
    int rc = 0;
    Py_ssize_t used = t->used;
    t->used = 0;
    for (Py_ssize_t i = 0; i < used; i++) {
        if (rc == 0) {
            PyObject *into = t->key[t->owner[i]].into;
            PyObject *had = PyDict_GetItemWithError(into, t->keys[i]);
            PyObject *sum = NULL;
            if (had != NULL) {
                PyObject *n = PyLong_FromLongLong(t->counts[i]);
                sum = n == NULL ? NULL : PyNumber_Add(had, n);
                Py_XDECREF(n);
            } else if (!PyErr_Occurred()) {
                sum = PyLong_FromLongLong(t->counts[i]);
            }
            rc = sum == NULL || PyDict_SetItem(into, t->keys[i], sum) < 0 ? -1 : 0;
            Py_XDECREF(sum);
        }
        Py_CLEAR(t->keys[i]);
    }
    for (int k = 0; k < t->nkeys; k++)
        if (t->key[k].table)
            memset(t->key[k].table, 0xff, (t->key[k].mask + 1) * sizeof(TallyEntry));   /* slot -1 */
    return rc;
}

static void
tally_clear(Tally *t)
{
    for (Py_ssize_t i = 0; i < t->used; i++)
        Py_CLEAR(t->keys[i]);
    t->used = 0;
    for (int k = 0; k < t->nkeys; k++) {
        TallyKey *key = &t->key[k];
        for (int i = 0; i < key->n; i++)
            Py_CLEAR(key->entry[i]);
        Py_CLEAR(key->when_value);
        Py_CLEAR(key->into);
        PyMem_Free(key->table);
        key->table = NULL;
    }
    t->nkeys = 0;
    Py_CLEAR(t->add_apart);
    Py_CLEAR(t->add_item);
    Py_CLEAR(t->server_ports);
    Py_CLEAR(t->ports_known);
    PyMem_Free(t->keys);
    PyMem_Free(t->counts);
    PyMem_Free(t->owner);
    t->keys = NULL;
    t->counts = NULL;
    t->owner = NULL;
}

/* A field of a record of the counted type, as getattr gives it (NULL with AttributeError
 * after a del). */
static PyObject *
tally_field(Tally *t, PyObject *record, int field)
{
    PyObject *v = *(PyObject **)((char *)record + t->offset[field]);
    if (v == NULL)
        PyErr_SetString(PyExc_AttributeError, "an event field was deleted");
    return v;
}

/* The twin of sides._client_sent: did the connection's client send this event?
 * 1, 0, or -1 with an exception. */
static int
tally_by_client(Tally *t, PyObject *ev)
{
    PyObject *protocol, *kind, *sport, *dport;
    if ((protocol = tally_field(t, ev, EV_PROTOCOL)) == NULL || (kind = tally_field(t, ev, EV_KIND)) == NULL ||
        (sport = tally_field(t, ev, EV_SRC_PORT)) == NULL || (dport = tally_field(t, ev, EV_DST_PORT)) == NULL)
        return -1;
    PyObject *ports = PyDict_GetItemWithError(t->ports_known, protocol);
    if (ports == NULL) {
        if (PyErr_Occurred() || (ports = PyObject_CallOneArg(t->server_ports, protocol)) == NULL)
            return -1;
        int rc = PyDict_SetItem(t->ports_known, protocol, ports);
        Py_DECREF(ports);   /* the dict holds it */
        if (rc < 0)
            return -1;
    }
    int src_srv = PySequence_Contains(ports, sport), dst_srv = PySequence_Contains(ports, dport);
    if (src_srv < 0 || dst_srv < 0)
        return -1;
    if (src_srv != dst_srv)
        return !src_srv;
    long s = PyLong_AsLong(sport), d = PyLong_AsLong(dport);
    if ((s == -1 || d == -1) && PyErr_Occurred())
        return -1;
    long low = s < d ? s : d, high = s < d ? d : s;
    if (low < 1024 && 1024 <= high)
        return d == low;
    int response = PyObject_RichCompareBool(kind, S_response, Py_EQ);
    return response < 0 ? -1 : !response;
}

/* The values of one key of a record (borrowed references) into v; 0, or -1 with an exception.
 * *by_client: the record's tally_by_client once known (-2 before: the keys of one record
 * share it). */
static int
tally_values(Tally *t, TallyKey *key, PyObject *ev, PyObject *detail, PyObject **v, int *by_client)
{
    for (int i = 0; i < key->n; i++) {
        if (key->field[i] == TALLY_BY_CLIENT) {
            if (*by_client == -2)
                *by_client = tally_by_client(t, ev);
            v[i] = *by_client < 0 ? NULL : *by_client ? Py_True : Py_False;
        } else if (key->field[i] == TALLY_DETAIL) {
            v[i] = PyDict_GetItemWithError(detail, key->entry[i]);
            if (v[i] == NULL && !PyErr_Occurred())
                v[i] = Py_None;
        } else {
            v[i] = tally_field(t, ev, key->field[i]);
        }
        if (v[i] == NULL)
            return -1;
    }
    return 0;
}

/* A hash of the values (equal values, as Python compares them, hash alike); -1 on error. */
static Py_hash_t
tally_hash(const PyObject *const *v, int n)
{
    Py_uhash_t h = 0x27D4EB2F165667C5ULL;
    for (int i = 0; i < n; i++) {
        Py_hash_t one = PyObject_Hash((PyObject *)v[i]);
        if (one == -1)
            return -1;
        h = (h ^ (Py_uhash_t)one) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
    }
    return h == (Py_uhash_t)-1 ? -2 : (Py_hash_t)h;
}

/* Does a key's tuple hold these values (identical, or equal as Python compares them)?
 * 1, 0, or -1 with an exception. */
static int
tally_same(PyObject *key, PyObject *const *v, int n)
{
    for (int i = 0; i < n; i++) {
        PyObject *held = PyTuple_GET_ITEM(key, i);
        if (held != v[i]) {
            int eq = PyObject_RichCompareBool(held, v[i], Py_EQ);
            if (eq <= 0)
                return eq;
        }
    }
    return 1;
}

/* Count one record under one key: its slot's counter, or a new slot (the key's tuple made
 * now). 0, or -1 with an exception. */
static int
tally_count(Tally *t, int k, PyObject *ev, PyObject *detail, int *by_client)
{
    TallyKey *key = &t->key[k];
    PyObject *v[TALLY_MAX_NAMES];
    Py_hash_t hash;
    if (tally_values(t, key, ev, detail, v, by_client) < 0 || (hash = tally_hash((const PyObject *const *)v, key->n)) == -1)
        return -1;
    size_t i = (size_t)hash & key->mask;
    for (;; i = (i + 1) & key->mask) {
        TallyEntry *e = &key->table[i];
        if (e->slot < 0)
            break;
        if (e->hash == hash) {
            int same = tally_same(t->keys[e->slot], v, key->n);
            if (same < 0)
                return -1;
            if (same) {
                t->counts[e->slot]++;
                return 0;
            }
        }
    }
    if (t->used == t->limit) {   /* every slot taken: hand the counts over, the tables empty */
        if (tally_flush(t) < 0)
            return -1;
        i = (size_t)hash & key->mask;
    }
    PyObject *tuple = PyTuple_New(key->n);
    if (tuple == NULL)
        return -1;
    for (int j = 0; j < key->n; j++)
        PyTuple_SET_ITEM(tuple, j, Py_NewRef(v[j]));
    key->table[i].hash = hash;
    key->table[i].slot = t->used;
    t->keys[t->used] = tuple;
    t->owner[t->used] = k;
    t->counts[t->used++] = 1;
    return 0;
}

/* Count one record under every key (and hand it over where it must be). */
static int
tally_record(Tally *t, PyObject *ev)
{
    PyObject *detail = NULL;
    int exact = Py_IS_TYPE(ev, t->type);
    if (exact && t->needs_detail)
        detail = *otsec_event_field(ev, EV_DETAIL);
    if (!exact || (t->needs_detail && (detail == NULL || !PyDict_CheckExact(detail)))) {
        PyObject *r = PyObject_CallOneArg(t->add_item, ev);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    int by_client = -2;
    for (int k = 0; k < t->nkeys; k++) {
        TallyKey *key = &t->key[k];
        if (key->when_field >= 0) {
            PyObject *v = tally_field(t, ev, key->when_field);
            int applies = v == NULL ? -1 : PyObject_RichCompareBool(v, key->when_value, Py_EQ);
            if (applies < 0)
                return -1;
            if (!applies)
                continue;
        }
        if (tally_count(t, k, ev, detail, &by_client) < 0)
            return -1;
    }
    for (int i = 0; i < t->napart; i++) {
        PyObject *v = tally_field(t, ev, t->apart[i]);
        int set = v == NULL ? -1 : v == Py_None ? 0 : PyList_CheckExact(v) ? PyList_GET_SIZE(v) > 0
                                                                          : PyObject_IsTrue(v);
        if (set < 0)
            return -1;
        if (set) {
            PyObject *r = PyObject_CallOneArg(t->add_apart, ev);
            Py_XDECREF(r);
            return r == NULL ? -1 : 0;
        }
    }
    return 0;
}

/* The index of a field name of the counted type, or -1 with ValueError. */
static int
tally_field_index(Tally *t, PyObject *name)
{
    int index = t->index_of(name);
    if (index < 0)
        PyErr_Format(PyExc_ValueError, "tally_by: %R is not a field of model.%s", name,
                     t->type == otsec_Event ? "Event" : "Flow");
    return index;
}

/* Read Tally.keys into t (names checked; see otsec.analysis.tally). 0 or -1. */
static int
tally_keys(Tally *t, PyObject *keys, PyObject *when, PyObject *counts)
{
    PyObject *seq = PySequence_Fast(keys, "tally_by: keys must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t nkeys = PySequence_Fast_GET_SIZE(seq);
    if (nkeys > TALLY_MAX_KEYS || !PyTuple_Check(counts) || PyTuple_GET_SIZE(counts) != nkeys) {
        PyErr_Format(PyExc_ValueError, "tally_by: at most %d keys, and one counts dict per key",
                     TALLY_MAX_KEYS);
        Py_DECREF(seq);
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t k = 0; k < nkeys && rc == 0; k++) {
        TallyKey *key = &t->key[t->nkeys++];
        key->n = 0;
        key->when_field = -1;
        key->into = Py_NewRef(PyTuple_GET_ITEM(counts, k));
        PyObject *cond = k < PyTuple_GET_SIZE(when) ? PyTuple_GET_ITEM(when, k) : Py_None;
        if (cond != Py_None) {
            if (!PyTuple_Check(cond) || PyTuple_GET_SIZE(cond) != 2) {
                PyErr_SetString(PyExc_TypeError, "tally_by: a condition is (field, value) or None");
                rc = -1;
                break;
            }
            key->when_field = tally_field_index(t, PyTuple_GET_ITEM(cond, 0));
            key->when_value = Py_NewRef(PyTuple_GET_ITEM(cond, 1));
            if (key->when_field < 0) {
                rc = -1;
                break;
            }
        }
        PyObject *names = PySequence_Fast(PySequence_Fast_GET_ITEM(seq, k), "tally_by: a key is a sequence of names");
        if (names == NULL || !PyDict_CheckExact(key->into)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "tally_by: counts must be dicts");
            Py_XDECREF(names);
            rc = -1;
            break;
        }
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(names) && rc == 0; i++) {
            PyObject *name = PySequence_Fast_GET_ITEM(names, i);
            if (key->n == TALLY_MAX_NAMES || !PyUnicode_Check(name)) {
                PyErr_Format(PyExc_ValueError, "tally_by: a key has at most %d names (str)", TALLY_MAX_NAMES);
                rc = -1;
            } else if (t->type == otsec_Event && PyUnicode_CompareWithASCIIString(name, "by_client") == 0) {
                key->entry[key->n] = NULL;
                key->field[key->n++] = TALLY_BY_CLIENT;
            } else if (t->type == otsec_Event && PyUnicode_GET_LENGTH(name) > 7
                       && PyUnicode_Tailmatch(name, S_detail_dot, 0, 7, -1) == 1) {
                key->entry[key->n] = PyUnicode_Substring(name, 7, PyUnicode_GET_LENGTH(name));
                key->field[key->n] = TALLY_DETAIL;
                t->needs_detail = 1;
                rc = key->entry[key->n++] == NULL ? -1 : 0;
            } else {
                int index = tally_field_index(t, name);
                key->entry[key->n] = NULL;
                key->field[key->n] = index;
                rc = index < 0 ? -1 : (key->n++, 0);
            }
        }
        Py_DECREF(names);
    }
    Py_DECREF(seq);
    return rc;
}

typedef struct FlowTableObject FlowTableObject;

/* _decode: decode one message; events (with packet and ts set) are appended to out. */
static int
session_decode(FlowTableObject *self, Session *ss, PyObject *msg, int from_client,
               long long packet, double ts, PyObject *out);

/* _find_start: the first position at or after pos where the probe accepts; -1 none, -2 error */
static Py_ssize_t
session_find_start(Session *ss, PyObject *buf, Py_ssize_t pos)
{
    Py_ssize_t len = PyBytes_GET_SIZE(buf);
    for (Py_ssize_t p = pos; p < len; p++) {
        int t = probe_at(ss->probe, buf, p);
        if (t < 0)
            return -2;
        if (t)
            return p;
    }
    return -1;
}

/* Health counters, in health_sync's order. */
enum {
    H_MESSAGES, H_ANOMALOUS, H_GAPS, H_RESYNCS, H_UNFRAMEABLE_BYTES, H_BUFFER_OVERFLOWS,
    H_UNPAIRED_RESPONSES, H_UNANSWERED_REQUESTS, H_TRUNCATED_AT_EOF, H_DECODER_ERRORS, H_FIELDS
};

struct FlowTableObject {
    PyObject_HEAD
    PyObject *decoders, *by_port, *ports_of, *on_event, *on_flow, *health, *counters;
    PyObject *capture;
    PyObject *emitting;
    long max_flows;
    double tcp_idle, udp_idle, closed_linger;
    long source_index;
    double clock_packet;
    double next_sweep, sweep_floor;
    int shard_index, shard_count;  /* shard_count 0: no sharding */
    /* connections, in creation order (the order Python's states dict iterates) */
    struct Conn *first, *last;
    Py_ssize_t open;
    uint64_t serial;
    struct Entry **buckets;
    size_t nbuckets, nentries;
    struct Conn *graveyard;     /* ended during the current call; freed when it returns */
    int busy;                   /* a call is in progress (see enter()) */
    Tally tally[2];             /* events (TALLY_EVENTS) and flows (TALLY_FLOWS) counted by key */
    long long health_pending[H_FIELDS];   /* health counts of the call (health_add) */
};

/* health.<name> += n, counted here and added to the Health object when the call returns
 * (health_sync): an attribute update per message cost 1.5 % of a run. */
static inline int
health_add(FlowTableObject *self, int field, long long n)
{
    self->health_pending[field] += n;
    return 0;
}

/* Add the counts of the call to the Health object; 0, or -1 with an exception. */
static int
health_sync(FlowTableObject *self)
{
    PyObject *names[H_FIELDS] = {S_messages, S_anomalous, S_h_gaps, S_resyncs, S_unframeable_bytes,
                                 S_buffer_overflows, S_unpaired_responses, S_unanswered_requests,
                                 S_truncated_at_eof, S_decoder_errors};
    int rc = 0;
    for (int i = 0; i < H_FIELDS; i++) {
        long long n = self->health_pending[i];
        self->health_pending[i] = 0;
        if (n && rc == 0)
            rc = attr_add(self->health, names[i], n);
    }
    return rc;
}

static int
session_decode(FlowTableObject *self, Session *ss, PyObject *msg, int from_client,
               long long packet, double ts, PyObject *out)
{
    PyObject *events = NULL;
    if (ss->cdecode != NULL) {
        events = ss->cdecode(msg, from_client, ss->state);
        if (events == Py_NotImplemented)  /* not covered by the twin: the Python decoder's */
            Py_CLEAR(events);
    }
    if (events == NULL && !PyErr_Occurred()) {
        PyObject *args[3] = {msg, from_client ? Py_True : Py_False, ss->state};
        events = PyObject_Vectorcall(ss->decode, args, 3, NULL);
        if (events != NULL && !PyList_CheckExact(events))  /* the contract says list; take any iterable */
            Py_SETREF(events, PySequence_List(events));
    }
    if (events == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        /* a decoder bug must not stop the sensor; it is counted */
        PyErr_Clear();
        return health_add(self, H_DECODER_ERRORS, 1);
    }
    PyObject *pkt = PyLong_FromLongLong(packet), *t = PyFloat_FromDouble(ts);
    int rc = (pkt && t) ? 0 : -1;
    long long count = 0;
    for (Py_ssize_t k = 0; rc == 0 && k < PyList_GET_SIZE(events); k++) {
        PyObject *ev = PyList_GET_ITEM(events, k), *proto;
        Py_INCREF(ev);
        if (ev_set(ev, EV_PACKET, S_packet, pkt) < 0 || ev_set(ev, EV_TS, S_ts, t) < 0) {
            rc = -1;
        } else {
            count++;
            if ((proto = ev_get(ev, EV_PROTOCOL, S_protocol)) == NULL ||
                PySet_Add(ss->protocols, proto) < 0 || PyList_Append(out, ev) < 0)
                rc = -1;
            Py_XDECREF(proto);
        }
        Py_DECREF(ev);
    }
    Py_DECREF(events);
    Py_XDECREF(pkt);
    Py_XDECREF(t);
    if (count && health_add(self, H_MESSAGES, count) < 0)
        rc = -1;
    return rc;
}

/* Session.feed: add contiguous bytes of one (decoder) direction; completed messages are
 * appended to out, each with the packet that completed it (see session.py). bounds NULL
 * is Python's None. */
static int
session_feed(FlowTableObject *self, Session *ss, PyObject *data, int from_client, int gapped,
             long long packet, double ts, const Bounds *bounds, PyObject *out)
{
    int i = from_client ? 1 : 0;
    if (gapped) {
        if (health_add(self, H_GAPS, 1) < 0)
            return -1;
        Py_INCREF(EMPTY_BYTES);
        Py_SETREF(ss->bufs[i], EMPTY_BYTES);
        ss->syncing[i] = 1;
    }
    PyObject *held = ss->bufs[i];
    if (bounds == NULL && PyBytes_GET_SIZE(held) == 0 && !ss->syncing[i]) {
        Py_ssize_t n = call_frame(ss, data, 0);
        if (n == FRAME_FAILED)
            return -1;
        if (n == PyBytes_GET_SIZE(data))  /* the common case: one whole message */
            return session_decode(self, ss, data, from_client, packet, ts, out);
    }
    PyObject *buf;
    if (PyBytes_GET_SIZE(held)) {
        buf = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(held) + PyBytes_GET_SIZE(data));
        if (buf == NULL)
            return -1;
        memcpy(PyBytes_AS_STRING(buf), PyBytes_AS_STRING(held), PyBytes_GET_SIZE(held));
        memcpy(PyBytes_AS_STRING(buf) + PyBytes_GET_SIZE(held), PyBytes_AS_STRING(data),
               PyBytes_GET_SIZE(data));
    } else {
        buf = data;
        Py_INCREF(buf);
    }
    Py_ssize_t pos = 0, end = PyBytes_GET_SIZE(buf), seg = 0, base = 0;
    if (bounds != NULL)
        base = end - bounds->v[bounds->n - 1].end;
    while (pos < end) {
        if (ss->syncing[i]) {
            Py_ssize_t start = session_find_start(ss, buf, pos);
            if (start == -2)
                goto fail;
            if (start < 0) {
                /* keep a tail: a probe may need more of a message than has arrived */
                Py_ssize_t keep = end - SYNC_TAIL > pos ? end - SYNC_TAIL : pos;
                if (health_add(self, H_UNFRAMEABLE_BYTES, keep - pos) < 0)
                    goto fail;
                pos = keep;
                break;
            }
            if (start > pos) {
                if (health_add(self, H_RESYNCS, 1) < 0 ||
                    health_add(self, H_UNFRAMEABLE_BYTES, start - pos) < 0)
                    goto fail;
            }
            pos = start;
            ss->syncing[i] = 0;
        }
        Py_ssize_t n = call_frame(ss, buf, pos);
        if (n == FRAME_FAILED)
            goto fail;
        if (n > end - pos)  /* a frame() claiming more than is here: the rest is the message */
            n = end - pos;
        if (n > 0) {
            if (bounds != NULL) {
                while (bounds->v[seg].end < pos + n - base)
                    seg++;
                packet = bounds->v[seg].packet;
                ts = bounds->v[seg].ts;
            }
            PyObject *msg;
            if (pos || n != end) {
                msg = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + pos, n);
                if (msg == NULL)
                    goto fail;
            } else {
                msg = buf;
                Py_INCREF(msg);
            }
            int r = session_decode(self, ss, msg, from_client, packet, ts, out);
            Py_DECREF(msg);
            if (r < 0)
                goto fail;
            pos += n;
        } else if (n == 0) {  /* NEED_MORE */
            break;
        } else {  /* UNFRAMEABLE: lost step with the stream; search for the next message */
            ss->syncing[i] = 1;
            pos += 1;
            if (health_add(self, H_RESYNCS, 1) < 0 || health_add(self, H_UNFRAMEABLE_BYTES, 1) < 0)
                goto fail;
        }
    }
    PyObject *rest;
    if (pos) {
        rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + pos, end - pos);
        if (rest == NULL)
            goto fail;
    } else {
        rest = buf;
        Py_INCREF(rest);
    }
    if (PyBytes_GET_SIZE(rest) > MAX_BUFFERED_BYTES) {
        if (health_add(self, H_BUFFER_OVERFLOWS, 1) < 0) {
            Py_DECREF(rest);
            goto fail;
        }
        Py_DECREF(rest);
        rest = EMPTY_BYTES;
        Py_INCREF(rest);
        ss->syncing[i] = 1;
    }
    Py_SETREF(ss->bufs[i], rest);
    Py_DECREF(buf);
    return 0;
fail:
    Py_DECREF(buf);
    return -1;
}

/* Session.pair: match a response to its request once the event's context is set. */
static int
session_pair(FlowTableObject *self, Session *ss, PyObject *ev)
{
    PyObject *key = ev_get(ev, EV_PAIR_KEY, S_pair_key);
    if (key == NULL)
        return -1;
    int rc = 0;
    if (key != Py_None) {
        PyObject *kind = ev_get(ev, EV_KIND, S_kind);
        if (kind == NULL) {
            Py_DECREF(key);
            return -1;
        }
        int is_req = PyUnicode_Check(kind) && PyUnicode_Compare(kind, S_request) == 0;
        int is_resp = !is_req && PyUnicode_Check(kind) && PyUnicode_Compare(kind, S_response) == 0;
        Py_DECREF(kind);
        if (is_req) {
            if (PyDict_GET_SIZE(ss->pending) >= MAX_PENDING_REQUESTS) {
                rc = otsec_drop_oldest(ss->pending);
                if (rc == 0)
                    rc = health_add(self, H_UNANSWERED_REQUESTS, 1);
            }
            if (rc == 0)
                rc = PyDict_SetItem(ss->pending, key, ev);
        } else if (is_resp) {
            /* as dict.pop: an empty table answers without hashing the key */
            PyObject *req = PyDict_GET_SIZE(ss->pending) ? PyDict_GetItemWithError(ss->pending, key) : NULL;
            if (req == NULL) {
                if (PyErr_Occurred()) {
                    rc = -1;
                } else {
                    rc = health_add(self, H_UNPAIRED_RESPONSES, 1);
                    PyObject *proto = rc == 0 ? ev_get(ev, EV_PROTOCOL, S_protocol) : NULL;
                    PyObject *anomalies = proto ? ev_get(ev, EV_ANOMALIES, S_anomalies) : NULL;
                    PyObject *flag = anomalies ? PyUnicode_FromFormat("%S.unpaired_response", proto) : NULL;
                    PyObject *r = flag ? PyObject_CallMethodOneArg(anomalies, S_append, flag) : NULL;
                    if (r == NULL)
                        rc = -1;
                    Py_XDECREF(r);
                    Py_XDECREF(proto);
                    Py_XDECREF(anomalies);
                    Py_XDECREF(flag);
                }
            } else {
                Py_INCREF(req);
                rc = PyDict_DelItem(ss->pending, key);
                PyObject *rp = rc == 0 ? ev_get(req, EV_PACKET, S_packet) : NULL;
                if (rp == NULL || ev_set(ev, EV_REQUEST_PACKET, S_request_packet, rp) < 0) {
                    rc = -1;
                } else {
                    PyObject *targets = ev_get(ev, EV_TARGETS, S_targets);
                    int has = targets ? PyObject_IsTrue(targets) : -1;
                    Py_XDECREF(targets);
                    if (has < 0) {
                        rc = -1;
                    } else if (!has) {
                        PyObject *rt = ev_get(req, EV_TARGETS, S_targets);
                        if (rt == NULL || ev_set(ev, EV_TARGETS, S_targets, rt) < 0)
                            rc = -1;
                        Py_XDECREF(rt);
                    }
                }
                Py_XDECREF(rp);
                Py_DECREF(req);
            }
        }
    }
    Py_DECREF(key);
    if (rc < 0)
        return -1;
    PyObject *anomalies = ev_get(ev, EV_ANOMALIES, S_anomalies);
    if (anomalies == NULL)
        return -1;
    int t = PyObject_IsTrue(anomalies);
    Py_DECREF(anomalies);
    if (t < 0)
        return -1;
    return t ? health_add(self, H_ANOMALOUS, 1) : 0;
}

/* Session.finish: count what was left incomplete. */
static int
session_finish(FlowTableObject *self, Session *ss)
{
    for (int i = 0; i < 2; i++) {
        if (PyBytes_GET_SIZE(ss->bufs[i]) && health_add(self, H_TRUNCATED_AT_EOF, 1) < 0)
            return -1;
        Py_INCREF(EMPTY_BYTES);
        Py_SETREF(ss->bufs[i], EMPTY_BYTES);
    }
    if (health_add(self, H_UNANSWERED_REQUESTS, PyDict_GET_SIZE(ss->pending)) < 0)
        return -1;
    PyDict_Clear(ss->pending);
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Connections and the index                                                           */

typedef struct {
    uint8_t ip_len, proto;
    uint16_t sport, dport;
    uint8_t sip[16], dip[16];
} Key;

typedef struct Entry {
    Key key;
    struct Entry *next;
    struct Conn *conn;
    int from_client;
} Entry;

typedef struct Conn {
    struct Conn *prev, *next;
    uint64_t serial;
    Entry entries[2];         /* client -> server, server -> client */
    PyObject *flow, *order, *flow_id, *client_ip, *server_ip, *client_port, *server_port;
    PyObject *client_mac, *server_mac;   /* str, or NULL for None */
    long long packets[2], bytes[2];      /* index 1: client -> server */
    long long last_packet, events;
    double last_ts;
    int proto;
    Stream streams[2];                   /* index 1: client -> server */
    Session *session;
    int flip, attempts, fins, closed, ended;
    PyObject *held[2];                   /* first bytes awaiting detection (bytes) */
    Bounds held_bounds[2];
} Conn;

static inline uint64_t
key_hash(const Key *k)
{
    uint64_t w[(sizeof(Key) + 7) / 8] = {0};
    memcpy(w, k, sizeof(Key));
    uint64_t h = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
        h ^= w[i];
        h *= 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    return h;
}

static void
key_make(Key *k, const unsigned char *sip, uint16_t sport, const unsigned char *dip, uint16_t dport,
         int ip_len, int proto)
{
    memset(k, 0, sizeof(Key));
    k->ip_len = (uint8_t)ip_len;
    k->proto = (uint8_t)proto;
    k->sport = sport;
    k->dport = dport;
    memcpy(k->sip, sip, ip_len);
    memcpy(k->dip, dip, ip_len);
}

static int
index_grow(FlowTableObject *self)
{
    size_t n = self->nbuckets ? self->nbuckets * 2 : 1024;
    Entry **b = PyMem_Calloc(n, sizeof(Entry *));
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < self->nbuckets; i++) {
        /* keep each chain's order (the newest entry of a key first) */
        Entry *e = self->buckets[i], *rev = NULL;
        while (e) {
            Entry *next = e->next;
            e->next = rev;
            rev = e;
            e = next;
        }
        for (e = rev; e; ) {
            Entry *next = e->next;
            size_t j = key_hash(&e->key) & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    PyMem_Free(self->buckets);
    self->buckets = b;
    self->nbuckets = n;
    return 0;
}

static Entry *
index_get(FlowTableObject *self, const Key *k)
{
    if (!self->nbuckets)
        return NULL;
    for (Entry *e = self->buckets[key_hash(k) & (self->nbuckets - 1)]; e; e = e->next)
        if (memcmp(&e->key, k, sizeof(Key)) == 0)
            return e;
    return NULL;
}

/* Room for n more entries, so that inserting them cannot fail half-way. */
static int
index_reserve(FlowTableObject *self, size_t n)
{
    if (self->nentries + n > self->nbuckets * 3 / 4 && index_grow(self) < 0)
        return -1;
    return 0;
}

static void
index_put(FlowTableObject *self, Entry *e)
{
    size_t j = key_hash(&e->key) & (self->nbuckets - 1);
    e->next = self->buckets[j];
    self->buckets[j] = e;
    self->nentries++;
}

static void
index_remove(FlowTableObject *self, Entry *e)
{
    Entry **p = &self->buckets[key_hash(&e->key) & (self->nbuckets - 1)];
    while (*p) {
        if (*p == e) {
            *p = e->next;
            self->nentries--;
            return;
        }
        p = &(*p)->next;
    }
}

static void
conn_free(Conn *c)
{
    Py_XDECREF(c->flow);
    Py_XDECREF(c->order);
    Py_XDECREF(c->flow_id);
    Py_XDECREF(c->client_ip);
    Py_XDECREF(c->server_ip);
    Py_XDECREF(c->client_port);
    Py_XDECREF(c->server_port);
    Py_XDECREF(c->client_mac);
    Py_XDECREF(c->server_mac);
    for (int i = 0; i < 2; i++) {
        stream_free(&c->streams[i]);
        Py_XDECREF(c->held[i]);
        bounds_free(&c->held_bounds[i]);
    }
    session_free(c->session);
    PyMem_Free(c);
}

/* Write the C-side counters of a connection into its Flow record (its slots: the record
 * is always a model.Flow made by new_flow). */
static int
conn_sync(Conn *c)
{
    PyObject *f = c->flow;
    return flow_put(f, FL_LAST_TS, PyFloat_FromDouble(c->last_ts)) < 0 ||
           flow_put(f, FL_LAST_PACKET, PyLong_FromLongLong(c->last_packet)) < 0 ||
           flow_put(f, FL_PACKETS_C2S, PyLong_FromLongLong(c->packets[1])) < 0 ||
           flow_put(f, FL_PACKETS_S2C, PyLong_FromLongLong(c->packets[0])) < 0 ||
           flow_put(f, FL_BYTES_C2S, PyLong_FromLongLong(c->bytes[1])) < 0 ||
           flow_put(f, FL_BYTES_S2C, PyLong_FromLongLong(c->bytes[0])) < 0 ||
           flow_put(f, FL_EVENTS, PyLong_FromLongLong(c->events)) < 0 ||
           flow_put(f, FL_CLIENT_MAC, Py_NewRef(c->client_mac ? c->client_mac : Py_None)) < 0 ||
           flow_put(f, FL_SERVER_MAC, Py_NewRef(c->server_mac ? c->server_mac : Py_None)) < 0 ? -1 : 0;
}

/* Free what ended during the current call (its Flow gets its final counters first, as
 * the Python object would keep being updated). */
static void
bury(FlowTableObject *self)
{
    if (self->graveyard == NULL)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    while (self->graveyard) {
        Conn *c = self->graveyard;
        self->graveyard = c->next;
        if (conn_sync(c) < 0)   /* only the record's last counters are lost */
            PyErr_Clear();
        conn_free(c);
    }
    if (type)
        PyErr_Restore(type, value, tb);
}

/* ---------------------------------------------------------------------------------- */
/* The table                                                                          */

static int deliver(FlowTableObject *self, Conn *c, int from_client, PyObject *data, int gapped,
                   long long packet, double ts, const Bounds *bounds);

static int
emit(FlowTableObject *self, Conn *c, int from_client, PyObject *events)
{
    PyObject *src_ip, *src_port, *src_mac, *dst_ip, *dst_port, *dst_mac;
    if (from_client) {
        src_ip = c->client_ip; src_port = c->client_port; src_mac = c->client_mac;
        dst_ip = c->server_ip; dst_port = c->server_port; dst_mac = c->server_mac;
    } else {
        src_ip = c->server_ip; src_port = c->server_port; src_mac = c->server_mac;
        dst_ip = c->client_ip; dst_port = c->client_port; dst_mac = c->client_mac;
    }
    if (!src_mac)
        src_mac = Py_None;
    if (!dst_mac)
        dst_mac = Py_None;
    Py_INCREF(c->order);
    Py_SETREF(self->emitting, c->order);
    Py_ssize_t n = PyList_GET_SIZE(events);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *ev = PyList_GET_ITEM(events, k);
        if (ev_set(ev, EV_CAPTURE, S_capture, self->capture) < 0 ||
            ev_set(ev, EV_FLOW_ID, S_flow_id, c->flow_id) < 0 ||
            ev_set(ev, EV_SRC_IP, S_src_ip, src_ip) < 0 ||
            ev_set(ev, EV_SRC_PORT, S_src_port, src_port) < 0 ||
            ev_set(ev, EV_SRC_MAC, S_src_mac, src_mac) < 0 ||
            ev_set(ev, EV_DST_IP, S_dst_ip, dst_ip) < 0 ||
            ev_set(ev, EV_DST_PORT, S_dst_port, dst_port) < 0 ||
            ev_set(ev, EV_DST_MAC, S_dst_mac, dst_mac) < 0 ||
            session_pair(self, c->session, ev) < 0)
            return -1;
        c->events++;
        if (self->tally[TALLY_EVENTS].add_item != NULL && tally_record(&self->tally[TALLY_EVENTS], ev) < 0)
            return -1;
        if (self->on_event != Py_None) {
            PyObject *r = PyObject_CallOneArg(self->on_event, ev);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        }
    }
    return 0;
}

/* _attach: start decoding with this decoder. */
static int
attach(FlowTableObject *self, Conn *c, PyObject *dec)
{
    PyObject *name = PyObject_GetAttr(dec, S_name);
    if (name == NULL)
        return -1;
    PyObject *ports = PyDict_GetItemWithError(self->ports_of, name);
    if (ports == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, name);
        Py_DECREF(name);
        return -1;
    }
    int cin = PySequence_Contains(ports, c->client_port);
    int sin = PySequence_Contains(ports, c->server_port);
    if (cin < 0 || sin < 0) {
        Py_DECREF(name);
        return -1;
    }
    c->flip = cin && !sin;
    c->session = session_new(dec);
    if (c->session == NULL || PyObject_SetAttr(c->flow, S_decoded, Py_True) < 0 ||
        PyObject_SetAttr(c->flow, S_app, name) < 0) {
        Py_DECREF(name);
        return -1;
    }
    Py_DECREF(name);
    return 0;
}

static int
held_clear(Conn *c, int i)
{
    Py_CLEAR(c->held[i]);
    c->held_bounds[i].n = 0;
    return 0;
}

/* table.detect for its common answers, with the probes' twins: a decoder registered on the
 * connection's ports whose probe passes, or False when no decoder's probe passes at all.
 * When a decoder's probe passes off its ports, table.detect decides (it frames and
 * trial-decodes). A new reference: the decoder, True or False; NULL on error. */
static PyObject *
detect(FlowTableObject *self, Conn *c, PyObject *data, int from_client)
{
    PyObject *on_port[2] = {PyDict_GetItemWithError(self->by_port, c->server_port),
                            PyDict_GetItemWithError(self->by_port, c->client_port)};
    if (PyErr_Occurred())
        return NULL;
    PyObject *args[5] = {self->decoders, self->by_port, c->flow, data, from_client ? Py_True : Py_False};
    if ((on_port[0] && !PyList_CheckExact(on_port[0])) || (on_port[1] && !PyList_CheckExact(on_port[1])) ||
        !PyTuple_CheckExact(self->decoders) || !PyBytes_CheckExact(data))
        return PyObject_Vectorcall(py_detect, args, 5, NULL);
    for (int i = 0; i < 2; i++) {
        for (Py_ssize_t k = 0; on_port[i] && k < PyList_GET_SIZE(on_port[i]); k++) {
            PyObject *dec = PyList_GET_ITEM(on_port[i], k);
            PyObject *probe = PyObject_GetAttr(dec, S_probe);
            if (probe == NULL)
                return NULL;
            /* offset 1 too: a connection picked up mid-stream may begin with a keep-alive byte */
            int r = probe_at(probe, data, 0);
            if (r == 0 && PyBytes_GET_SIZE(data) > 1)
                r = probe_at(probe, data, 1);
            Py_DECREF(probe);
            if (r)
                return r < 0 ? NULL : Py_NewRef(dec);
        }
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(self->decoders); k++) {
        PyObject *dec = PyTuple_GET_ITEM(self->decoders, k);
        int listed = 0;
        for (int i = 0; i < 2 && !listed; i++)
            if (on_port[i] && (listed = PySequence_Contains(on_port[i], dec)) < 0)
                return NULL;
        if (listed)
            continue;
        PyObject *probe = PyObject_GetAttr(dec, S_probe);
        if (probe == NULL)
            return NULL;
        int r = probe_at(probe, data, 0);
        Py_DECREF(probe);
        if (r)
            return r < 0 ? NULL : PyObject_Vectorcall(py_detect, args, 5, NULL);
    }
    return Py_NewRef(Py_False);
}

/* _await_detection: collect a direction's first bytes until a decoder recognises them.
 * Returns 1 with *out_data and *out_bounds (the bytes to decode, their segments) once a
 * decoder is attached, 0 when nothing is to be decoded yet, -1 on error. */
static int
await_detection(FlowTableObject *self, Conn *c, int from_client, PyObject *data, int gapped,
                long long packet, double ts, const Bounds *bounds, PyObject **out_data,
                Bounds *out_bounds)
{
    if (c->attempts <= 0)
        return 0;
    int i = from_client ? 1 : 0;
    PyObject *held = gapped ? NULL : c->held[i];
    Bounds nb = {0};
    PyObject *all;
    if (held && PyBytes_GET_SIZE(held)) {
        Py_ssize_t shift = PyBytes_GET_SIZE(held);
        Bounds *hb = &c->held_bounds[i];
        for (Py_ssize_t k = 0; k < hb->n; k++)
            if (bounds_push(&nb, hb->v[k].end, hb->v[k].packet, hb->v[k].ts) < 0)
                goto fail;
        if (bounds) {
            for (Py_ssize_t k = 0; k < bounds->n; k++)
                if (bounds_push(&nb, bounds->v[k].end + shift, bounds->v[k].packet, bounds->v[k].ts) < 0)
                    goto fail;
        } else if (bounds_push(&nb, PyBytes_GET_SIZE(data) + shift, packet, ts) < 0) {
            goto fail;
        }
        /* a stream of tiny segments keeps only its latest ends */
        if (nb.n > MAX_HELD_SEGMENTS) {
            Py_ssize_t drop = nb.n - MAX_HELD_SEGMENTS;
            memmove(nb.v, nb.v + drop, MAX_HELD_SEGMENTS * sizeof(Bound));
            nb.n = MAX_HELD_SEGMENTS;
        }
        all = PyBytes_FromStringAndSize(NULL, shift + PyBytes_GET_SIZE(data));
        if (all == NULL)
            goto fail;
        memcpy(PyBytes_AS_STRING(all), PyBytes_AS_STRING(held), shift);
        memcpy(PyBytes_AS_STRING(all) + shift, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    } else {
        if (bounds) {
            for (Py_ssize_t k = 0; k < bounds->n; k++)
                if (bounds_push(&nb, bounds->v[k].end, bounds->v[k].packet, bounds->v[k].ts) < 0)
                    goto fail;
        } else if (bounds_push(&nb, PyBytes_GET_SIZE(data), packet, ts) < 0) {
            goto fail;
        }
        all = data;
        Py_INCREF(all);
    }
    PyObject *found = detect(self, c, all, from_client);
    if (found == NULL) {
        Py_DECREF(all);
        goto fail;
    }
    if (found != Py_True && found != Py_False) {
        int r = attach(self, c, found);
        Py_DECREF(found);
        if (r < 0) {
            Py_DECREF(all);
            goto fail;
        }
        *out_data = all;
        *out_bounds = nb;
        return 1;
    }
    int incomplete = found == Py_True;
    Py_DECREF(found);
    if (PyBytes_GET_SIZE(all) >= (incomplete ? MAX_MESSAGE_AWAITED : DETECTION_WINDOW)) {
        c->attempts--;
        held_clear(c, i);
        Py_DECREF(all);
        bounds_free(&nb);
    } else {
        Py_XSETREF(c->held[i], all);
        bounds_free(&c->held_bounds[i]);
        c->held_bounds[i] = nb;
    }
    if (c->attempts <= 0) {  /* given up: nothing more is held */
        held_clear(c, 0);
        held_clear(c, 1);
    }
    return 0;
fail:
    bounds_free(&nb);
    return -1;
}

/* _deliver: decode a direction's new bytes, completed by this packet, or, when released
 * from the reassembly queue, by the segments listed in bounds. */
static int
deliver(FlowTableObject *self, Conn *c, int from_client, PyObject *data, int gapped,
        long long packet, double ts, const Bounds *bounds)
{
    PyObject *events = PyList_New(0);
    if (events == NULL)
        return -1;
    int rc = -1;
    PyObject *owned = NULL;
    Bounds own_bounds = {0};
    if (c->session == NULL) {
        int r = await_detection(self, c, from_client, data, gapped, packet, ts, bounds, &owned, &own_bounds);
        if (r <= 0) {
            rc = r;
            goto done;
        }
        data = owned;
        bounds = &own_bounds;
        gapped = 0;
        /* the other direction's first bytes, held while undetected, are decoded too */
        int o = from_client ? 0 : 1;
        PyObject *other = c->held[o];
        Bounds other_bounds = c->held_bounds[o];
        c->held[o] = NULL;
        memset(&c->held_bounds[o], 0, sizeof(Bounds));
        held_clear(c, from_client ? 1 : 0);
        if (other && PyBytes_GET_SIZE(other)) {
            int r2 = session_feed(self, c->session, other, from_client == c->flip, 0, packet, ts,
                                  &other_bounds, events);
            if (r2 == 0 && PyList_GET_SIZE(events))
                r2 = emit(self, c, !from_client, events);
            Py_DECREF(other);
            bounds_free(&other_bounds);
            if (r2 < 0)
                goto done;
            Py_SETREF(events, PyList_New(0));
            if (events == NULL)
                goto done;
        } else {
            Py_XDECREF(other);
            bounds_free(&other_bounds);
        }
    }
    if (session_feed(self, c->session, data, from_client != c->flip, gapped, packet, ts, bounds, events) < 0)
        goto done;
    rc = PyList_GET_SIZE(events) ? emit(self, c, from_client, events) : 0;
done:
    Py_XDECREF(events);
    Py_XDECREF(owned);
    bounds_free(&own_bounds);
    return rc;
}

/* _end: retire a connection: give up on holes, deliver what is queued, report the flow. */
static int
end_conn(FlowTableObject *self, Conn *c)
{
    for (int from_client = 1; from_client >= 0; from_client--) {
        Stream *s = &c->streams[from_client];
        while (s->qlen) {
            PyObject *data = stream_skip_gap(s);
            if (data == NULL)
                return -1;
            int r = 0;
            if (PyBytes_GET_SIZE(data)) {
                Bound last = s->bounds.v[s->bounds.n - 1];
                r = deliver(self, c, from_client, data, 1, last.packet, last.ts, &s->bounds);
            }
            Py_DECREF(data);
            if (r < 0)
                return -1;
        }
    }
    if (c->session && session_finish(self, c->session) < 0)
        return -1;
    /* unlink: index, creation-order list */
    if (!c->ended) {
        c->ended = 1;
        index_remove(self, &c->entries[0]);
        index_remove(self, &c->entries[1]);
        if (c->prev) c->prev->next = c->next; else self->first = c->next;
        if (c->next) c->next->prev = c->prev; else self->last = c->prev;
        self->open--;
        c->prev = NULL;
        c->next = self->graveyard;
        self->graveyard = c;
    }
    long long gaps = 0;
    for (int i = 0; i < 2; i++) {
        Stream *s = &c->streams[i];
        gaps += s->gaps;
        if (dict_add(self->counters, S_retransmitted_bytes, s->retransmitted_bytes) < 0 ||
            dict_add(self->counters, S_overlap_conflicts, s->overlap_conflicts) < 0 ||
            dict_add(self->counters, S_gap_bytes, s->gap_bytes) < 0)
            return -1;
    }
    if (gaps && attr_add(c->flow, S_gaps, gaps) < 0)
        return -1;
    if (c->streams[0].overlap_conflicts || c->streams[1].overlap_conflicts) {
        PyObject *anomalies = PyObject_GetAttr(c->flow, S_anomalies);
        if (anomalies == NULL)
            return -1;
        int r = PyList_Append(anomalies, S_tcp_overlap);
        Py_DECREF(anomalies);
        if (r < 0)
            return -1;
    }
    if (c->session && PySet_GET_SIZE(c->session->protocols) == 1) {
        PyObject *it = PyObject_GetIter(c->session->protocols);
        PyObject *only = it ? PyIter_Next(it) : NULL;
        Py_XDECREF(it);
        if (flow_put(c->flow, FL_APP, only) < 0)
            return -1;
    }
    if (flow_put(c->flow, FL_CAPTURE, Py_NewRef(self->capture)) < 0 || conn_sync(c) < 0)
        return -1;
    Py_INCREF(c->order);
    Py_SETREF(self->emitting, c->order);
    if (self->tally[TALLY_FLOWS].add_item != NULL && tally_record(&self->tally[TALLY_FLOWS], c->flow) < 0)
        return -1;
    if (self->on_flow != Py_None) {
        PyObject *r = PyObject_CallOneArg(self->on_flow, c->flow);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

static int
sweep(FlowTableObject *self, double now)
{
    self->next_sweep = now + SWEEP_INTERVAL;
    self->sweep_floor = now - SWEEP_INTERVAL;
    for (Conn *c = self->first; c; ) {
        Conn *next = c->next;
        double idle = now - c->last_ts;
        double limit = c->closed ? self->closed_linger : (c->proto == TCP ? self->tcp_idle : self->udp_idle);
        if (idle > limit) {
            if (dict_add(self->counters, S_flows_timed_out, 1) < 0 || end_conn(self, c) < 0)
                return -1;
        }
        c = next;
    }
    return 0;
}

typedef struct {
    double last_ts;
    uint64_t serial;
    Conn *conn;
} Victim;

static int
victim_cmp(const void *a, const void *b)
{
    const Victim *x = a, *y = b;
    if (x->last_ts < y->last_ts) return -1;
    if (x->last_ts > y->last_ts) return 1;
    if (isnan(x->last_ts) != isnan(y->last_ts)) return 0;
    return x->serial < y->serial ? -1 : x->serial > y->serial;
}

/* Put the k smallest victims (by victim_cmp) first, in order: heapq.nsmallest's answer.
 * Quickselect, then a sort of those k only; where a timestamp is NaN (victim_cmp is then
 * no strict order) the whole array is sorted, as before quickselect was used. */
static void
victims_smallest(Victim *v, Py_ssize_t n, Py_ssize_t k)
{
    int nan = 0;
    for (Py_ssize_t i = 0; i < n && !nan; i++)
        nan = isnan(v[i].last_ts);
    if (nan || k >= n) {
        qsort(v, n, sizeof(Victim), victim_cmp);
        return;
    }
    Py_ssize_t lo = 0, hi = n - 1;
    while (lo < hi) {   /* until v[k - 1] is in its sorted place, the smaller ones before it */
        Victim pivot = v[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (victim_cmp(&v[i], &pivot) < 0) i++;
            while (victim_cmp(&v[j], &pivot) > 0) j--;
            if (i <= j) {
                Victim tmp = v[i];
                v[i++] = v[j];
                v[j--] = tmp;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
    qsort(v, k, sizeof(Victim), victim_cmp);
}

/* _evict: over the cap, end the closed and least recently active tenth. */
static int
evict(FlowTableObject *self)
{
    Py_ssize_t count = self->open / 10 > 1 ? self->open / 10 : 1;
    Victim *closed = PyMem_Malloc(self->open * sizeof(Victim));
    Victim *still = PyMem_Malloc(self->open * sizeof(Victim));
    if (closed == NULL || still == NULL) {
        PyMem_Free(closed);
        PyMem_Free(still);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t nc = 0, no = 0;
    for (Conn *c = self->first; c; c = c->next) {
        Victim v = {c->last_ts, c->serial, c};
        if (c->closed)
            closed[nc++] = v;
        else
            still[no++] = v;
    }
    Py_ssize_t take_closed = nc >= count ? count : nc;
    Py_ssize_t take_open = count - take_closed;
    victims_smallest(closed, nc, take_closed);
    if (take_open)
        victims_smallest(still, no, take_open);
    int rc = 0;
    for (Py_ssize_t k = 0; k < take_closed && rc == 0; k++)
        if (dict_add(self->counters, S_flows_evicted, 1) < 0 || end_conn(self, closed[k].conn) < 0)
            rc = -1;
    for (Py_ssize_t k = 0; k < take_open && k < no && rc == 0; k++)
        if (dict_add(self->counters, S_flows_evicted, 1) < 0 || end_conn(self, still[k].conn) < 0)
            rc = -1;
    PyMem_Free(closed);
    PyMem_Free(still);
    return rc;
}

/* tick: advance time, retire idle connections. */
static int
tick(FlowTableObject *self, double pkt_no, double ts)
{
    if (ts >= self->next_sweep) {
        self->clock_packet = pkt_no - 0.5;
        return sweep(self, ts);
    }
    if (ts < self->sweep_floor) {
        self->next_sweep = ts;  /* the clock was stepped back: sweep from the new time on */
        self->sweep_floor = ts - 2 * SWEEP_INTERVAL;
    }
    return 0;
}

/* A parsed packet, its payload either in a frame (made into bytes only when needed) or
 * given as a bytes object. */
typedef struct {
    Packet p;
    const unsigned char *frame;
    PyObject *payload;   /* borrowed when given; owned when made from the frame */
    int payload_owned;
} Input;

static PyObject *
input_payload(Input *in)
{
    if (in->payload == NULL) {
        in->payload = PyBytes_FromStringAndSize((const char *)in->frame + in->p.payload, in->p.payload_len);
        in->payload_owned = 1;
    }
    return in->payload;
}

/* _new: a connection first seen in this packet. */
static Conn *
new_conn(FlowTableObject *self, long long pkt_no, double ts, Input *in, int *from_client)
{
    Packet *p = &in->p;
    int sender_is_client;
    PyObject *flow = new_flow(self->by_port, pkt_no, ts, p, &sender_is_client);
    if (flow == NULL)
        return NULL;
    Conn *c = PyMem_Calloc(1, sizeof(Conn));
    if (c == NULL) {
        Py_DECREF(flow);
        PyErr_NoMemory();
        return NULL;
    }
    c->flow = flow;
    c->flow_id = Py_NewRef(*otsec_flow_field(flow, FL_FLOW_ID));
    c->client_ip = Py_NewRef(*otsec_flow_field(flow, FL_CLIENT_IP));
    c->server_ip = Py_NewRef(*otsec_flow_field(flow, FL_SERVER_IP));
    c->client_port = Py_NewRef(*otsec_flow_field(flow, FL_CLIENT_PORT));
    c->server_port = Py_NewRef(*otsec_flow_field(flow, FL_SERVER_PORT));
    c->order = Py_BuildValue("(lL)", self->source_index, pkt_no);
    if (c->order == NULL) {
        conn_free(c);
        return NULL;
    }
    c->serial = self->serial++;
    c->proto = p->proto;
    c->attempts = (int)DETECTION_ATTEMPTS;
    c->last_ts = ts;
    c->last_packet = pkt_no;
    if (sender_is_client) {
        key_make(&c->entries[0].key, p->src_ip, p->sport, p->dst_ip, p->dport, p->ip_len, p->proto);
        key_make(&c->entries[1].key, p->dst_ip, p->dport, p->src_ip, p->sport, p->ip_len, p->proto);
    } else {
        key_make(&c->entries[0].key, p->dst_ip, p->dport, p->src_ip, p->sport, p->ip_len, p->proto);
        key_make(&c->entries[1].key, p->src_ip, p->sport, p->dst_ip, p->dport, p->ip_len, p->proto);
    }
    c->entries[0].conn = c->entries[1].conn = c;
    c->entries[0].from_client = 1;
    c->entries[1].from_client = 0;
    /* the server->client entry goes in last, so that for a connection whose two keys are
     * the same (a host talking to itself on one port) it is the one found, as in Python */
    if (index_reserve(self, 2) < 0) {
        conn_free(c);
        return NULL;
    }
    index_put(self, &c->entries[0]);
    index_put(self, &c->entries[1]);
    c->prev = self->last;
    if (self->last) self->last->next = c; else self->first = c;
    self->last = c;
    self->open++;
    if (dict_add(self->counters, S_flows, 1) < 0)
        return NULL;  /* linked: freed with the table */
    if (self->open > self->max_flows && evict(self) < 0)
        return NULL;
    *from_client = sender_is_client;
    return c;
}

static int
packet_in(FlowTableObject *self, long long pkt_no, double ts, Input *in)
{
    Packet *p = &in->p;
    if (!(self->sweep_floor <= ts && ts < self->next_sweep) && tick(self, (double)pkt_no, ts) < 0)
        return -1;
    self->clock_packet = (double)pkt_no;
    Key k;
    key_make(&k, p->src_ip, p->sport, p->dst_ip, p->dport, p->ip_len, p->proto);
    Entry *e = index_get(self, &k);
    Conn *c;
    int from_client;
    if (e == NULL || (p->proto == TCP && (p->flags & SYN) && !(p->flags & ACK) &&
                      (e->conn->closed || e->conn->bytes[1] > 0 || e->conn->bytes[0] > 0))) {
        if (e != NULL && end_conn(self, e->conn) < 0)
            return -1;
        c = new_conn(self, pkt_no, ts, in, &from_client);
        if (c == NULL)
            return -1;
    } else {
        c = e->conn;
        from_client = e->from_client;
    }
    c->last_ts = ts;
    c->last_packet = pkt_no;
    c->packets[from_client]++;
    c->bytes[from_client] += p->payload_len;
    const unsigned char *mine = p->src_mac, *theirs = p->dst_mac;
    PyObject **my_mac = from_client ? &c->client_mac : &c->server_mac;
    PyObject **their_mac = from_client ? &c->server_mac : &c->client_mac;
    if (*my_mac == NULL && mine && !(*my_mac = mac_text(mine)))
        return -1;
    if (*their_mac == NULL && theirs && !(*their_mac = mac_text(theirs)))
        return -1;
    if (p->proto != TCP)
        return 0;
    /* _tcp */
    Stream *s = &c->streams[from_client];
    if (p->flags & SYN)
        stream_syn(s, p->seq);
    if (p->flags & ACK) {
        /* first what this ACK gives up waiting for: the peer sent it before this packet */
        Stream *other = &c->streams[!from_client];
        if (other->qlen) {
            PyObject *data = stream_acked(other, p->ack);
            if (data == NULL)
                return -1;
            int r = 0;
            if (PyBytes_GET_SIZE(data))
                r = deliver(self, c, !from_client, data, 1, pkt_no, ts, &other->bounds);
            Py_DECREF(data);
            if (r < 0)
                return -1;
        }
    }
    if (p->payload_len && (c->session != NULL || c->attempts > 0)) {
        PyObject *payload = input_payload(in);
        if (payload == NULL)
            return -1;
        PyObject *data = stream_push(s, p->seq, payload, pkt_no, ts);
        if (data == NULL)
            return -1;
        int r = 0;
        if (PyBytes_GET_SIZE(data))
            r = deliver(self, c, from_client, data, s->gapped, pkt_no, ts, s->bounds.n ? &s->bounds : NULL);
        Py_DECREF(data);
        if (r < 0)
            return -1;
    }
    if ((p->flags & (FIN | RST)) && !c->closed) {
        /* ended, but a retransmission may still fill a hole: the queued data is only
         * given up when the flow is retired (linger timeout, reuse, end of input) */
        c->fins += (p->flags & FIN) ? 1 : 2;
        c->closed = c->fins >= 2;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* The Python type                                                                    */

/* Every call that can end connections enters and leaves through these: a callback
 * (on_event, on_flow, a decoder) calling back into the table that is calling it is refused,
 * since it could end a connection the outer call is still working on. */
static int
enter(FlowTableObject *self)
{
    if (self->decoders == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FlowTable was not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "FlowTable called again from one of its own callbacks");
        return -1;
    }
    self->busy = 1;
    return 0;
}

/* Leave: free what ended during the call, add its health counts. */
static int
leave(FlowTableObject *self, int rc)
{
    bury(self);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (health_sync(self) < 0) {
        if (type == NULL) {   /* the call's own error, if any, is the one reported */
            PyErr_Fetch(&type, &value, &tb);
            rc = -1;
        } else {
            PyErr_Clear();
        }
    }
    PyErr_Restore(type, value, tb);
    self->busy = 0;
    return rc;
}

static PyObject *
done(FlowTableObject *self, int rc)
{
    if (leave(self, rc) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
read_clock(PyObject *const *args, long long *pkt_no, double *ts)
{
    *pkt_no = PyLong_AsLongLong(args[0]);
    if (*pkt_no == -1 && PyErr_Occurred())
        return -1;
    *ts = PyFloat_AsDouble(args[1]);
    if (*ts == -1.0 && PyErr_Occurred())
        return -1;
    return 0;
}

/* frame(pkt_no, ts, linktype, frame) -> reason or None */
static PyObject *
table_frame(FlowTableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "frame(pkt_no, ts, linktype, frame)");
        return NULL;
    }
    long long pkt_no;
    double ts;
    if (read_clock(args, &pkt_no, &ts) < 0)
        return NULL;
    int linktype = as_int(args[2]);
    if (linktype == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[3], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Input in = {0};
    in.frame = view.buf;
    int r = parse_frame(linktype, view.buf, view.len, &in.p);
    if (r != PARSED) {
        PyBuffer_Release(&view);
        Py_INCREF(REASON_NAMES[r]);
        return REASON_NAMES[r];
    }
    if (enter(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int rc;
    if (self->shard_count &&
        (in.p.src_ip[in.p.ip_len - 1] + in.p.dst_ip[in.p.ip_len - 1] + in.p.sport + in.p.dport)
            % self->shard_count != self->shard_index)
        rc = tick(self, (double)pkt_no, ts);
    else
        rc = packet_in(self, pkt_no, ts, &in);
    if (in.payload_owned)
        Py_XDECREF(in.payload);
    PyBuffer_Release(&view);
    return done(self, rc);
}

static int
retire_all(FlowTableObject *self, double pkt_no)
{
    self->clock_packet = pkt_no - 0.5;
    for (Conn *c = self->first; c; ) {
        Conn *next = c->next;
        if (end_conn(self, c) < 0)
            return -1;
        c = next;
    }
    return 0;
}

/* The capture time of a record, correctly rounded as Python's
 * (sec * per_sec + frac + offset) / per_sec computes it with exact integers. */
static int
record_ts(uint64_t sec, uint64_t frac, uint64_t per_sec, long long offset, double *ts)
{
    unsigned __int128 units = (unsigned __int128)sec * per_sec + frac;
    if (offset == 0 && units < ((unsigned __int128)1 << 53)) {
        /* exact as a double: one correctly rounded division */
        *ts = (double)(uint64_t)units / (double)per_sec;
        return 0;
    }
    PyObject *s = PyLong_FromUnsignedLongLong(sec), *f = PyLong_FromUnsignedLongLong(frac);
    PyObject *p = PyLong_FromUnsignedLongLong(per_sec), *o = PyLong_FromLongLong(offset);
    PyObject *a = (s && p) ? PyNumber_Multiply(s, p) : NULL;
    PyObject *b = (a && f) ? PyNumber_Add(a, f) : NULL;
    PyObject *c = (b && o) ? PyNumber_Add(b, o) : NULL;
    PyObject *q = c ? PyNumber_TrueDivide(c, p) : NULL;
    Py_XDECREF(s); Py_XDECREF(f); Py_XDECREF(p); Py_XDECREF(o);
    Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(c);
    if (q == NULL)
        return -1;
    *ts = PyFloat_AsDouble(q);
    Py_DECREF(q);
    return 0;
}

static inline uint32_t
rd32(const unsigned char *b, int swapped)
{
    uint32_t v;
    memcpy(&v, b, 4);
    return swapped ? __builtin_bswap32(v) : v;
}

/* What a walk over a read buffer adds up, for the engine's per-source bookkeeping. */
typedef struct {
    long long first_number, number, nbytes;
    double first_ts, last_ts;
    int restarted;
    long long reasons[R_COUNT];
} Walk;

/* One captured frame of a walk: Engine.feed's work for it (restart check on a source's
 * first packet, parse, shard, the table). */
static int
walk_frame(FlowTableObject *self, Walk *w, double restart_below, double ts, int linktype,
           const unsigned char *frame, Py_ssize_t caplen)
{
    long long number = ++w->number;
    if (number == w->first_number + 1) {
        w->first_ts = ts;
        if (!isnan(restart_below) && ts < restart_below) {
            w->restarted = 1;
            if (retire_all(self, (double)number) < 0)
                return -1;
        }
    }
    w->last_ts = ts;
    w->nbytes += caplen;
    Input in = {0};
    in.frame = frame;
    int rc = 0, r = parse_frame(linktype, frame, caplen, &in.p);
    if (r != PARSED)
        w->reasons[r]++;
    else if (self->shard_count &&
             (in.p.src_ip[in.p.ip_len - 1] + in.p.dst_ip[in.p.ip_len - 1] + in.p.sport + in.p.dport)
                 % self->shard_count != self->shard_index)
        rc = tick(self, (double)number, ts);
    else
        rc = packet_in(self, number, ts, &in);
    if (in.payload_owned)
        Py_XDECREF(in.payload);
    bury(self);   /* per packet: what ended is freed at once, as a walk can be long */
    return rc;
}

/* (pos, number, bytes, first_ts, last_ts, restarted) of a walk; skipped[reason] += n */
static PyObject *
walk_result(Walk *w, Py_ssize_t pos, PyObject *skipped)
{
    for (int r = 1; r < R_COUNT; r++)
        if (w->reasons[r] && dict_add(skipped, REASON_NAMES[r], w->reasons[r]) < 0)
            return NULL;
    if (w->number == w->first_number)
        return Py_BuildValue("(nLLOOO)", pos, w->number, 0LL, Py_None, Py_None, Py_False);
    return Py_BuildValue("(nLLddO)", pos, w->number, w->nbytes, w->first_ts, w->last_ts,
                         w->restarted ? Py_True : Py_False);
}

/* The arguments both walkers share: buf, pos, number, swapped, ..., skipped, restart_below */
static int
walk_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, Py_buffer *view, Py_ssize_t *pos,
          Walk *w, int *swapped, PyObject **skipped, double *restart_below)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "walk takes %zd arguments", want);
        return -1;
    }
    *pos = PyLong_AsSsize_t(args[1]);
    w->first_number = w->number = PyLong_AsLongLong(args[2]);
    *swapped = PyObject_IsTrue(args[3]);
    *skipped = args[want - 2];
    *restart_below = args[want - 1] == Py_None ? NAN : PyFloat_AsDouble(args[want - 1]);
    if (PyErr_Occurred())
        return -1;
    if (!PyDict_Check(*skipped)) {
        PyErr_SetString(PyExc_TypeError, "walk: skipped must be a dict");
        return -1;
    }
    if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0)
        return -1;
    if (*pos < 0 || *pos > view->len) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "walk: pos outside the buffer");
        return -1;
    }
    return 0;
}

/* walk_pcap(buf, pos, number, swapped, per_sec, linktype, limit, skipped, restart_below)
 *   -> (pos, number, bytes, first_ts, last_ts, restarted)
 * Processes every whole classic-pcap record of buf from pos whose captured length is
 * within limit (CaptureReader refills and reports bad records). Frames that carry no
 * usable IP packet are counted in the skipped dict by reason. When restart_below is a
 * number and the first record is older, every open connection is retired first (the
 * source does not continue the traffic so far: engine.Engine.feed). */
static PyObject *
table_walk_pcap(FlowTableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos;
    Walk w = {0};
    int swapped;
    PyObject *skipped;
    double restart_below;
    if (walk_args(args, nargs, 9, &view, &pos, &w, &swapped, &skipped, &restart_below) < 0)
        return NULL;
    unsigned long long per_sec = PyLong_AsUnsignedLongLong(args[4]);
    int linktype = as_int(args[5]);
    unsigned long long limit = PyLong_AsUnsignedLongLong(args[6]);
    if (PyErr_Occurred() || per_sec == 0) {
        PyBuffer_Release(&view);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "walk_pcap: per_sec must be positive");
        return NULL;
    }
    if (enter(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    int rc = 0;
    while (end - pos >= 16) {
        const unsigned char *rec = buf + pos;
        uint32_t caplen = rd32(rec + 8, swapped);
        if (caplen > limit || (Py_ssize_t)caplen > end - pos - 16)
            break;
        double ts;
        if (record_ts(rd32(rec, swapped), rd32(rec + 4, swapped), per_sec, 0, &ts) < 0 ||
            walk_frame(self, &w, restart_below, ts, linktype, rec + 16, caplen) < 0) {
            rc = -1;
            break;
        }
        pos += 16 + caplen;
    }
    PyBuffer_Release(&view);
    return leave(self, rc) < 0 ? NULL : walk_result(&w, pos, skipped);
}

#define PCAPNG_EPB 6
#define PCAPNG_MAX_BLOCK (16 * 1024 * 1024)
#define PCAPNG_EPB_FIXED 20

/* walk_pcapng(buf, pos, number, swapped, interfaces, skipped, restart_below)
 *   -> (pos, number, bytes, first_ts, last_ts, restarted)
 * The same for pcapng: every whole, well-formed enhanced packet block from pos for a
 * known interface (objects with linktype, per_sec, offset_units); stops at any other
 * block, which CaptureReader handles. */
static PyObject *
table_walk_pcapng(FlowTableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos;
    Walk w = {0};
    int swapped;
    PyObject *skipped;
    double restart_below;
    if (walk_args(args, nargs, 7, &view, &pos, &w, &swapped, &skipped, &restart_below) < 0)
        return NULL;
    PyObject *ifaces = PySequence_Fast(args[4], "walk_pcapng: interfaces must be a sequence");
    if (ifaces == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t n_if = PySequence_Fast_GET_SIZE(ifaces);
    struct { int linktype; unsigned long long per_sec; long long offset; } *ifs =
        PyMem_Calloc(n_if ? n_if : 1, sizeof(*ifs));
    int rc = ifs ? enter(self) : -1;
    int entered = rc == 0;
    if (ifs == NULL)
        PyErr_NoMemory();
    for (Py_ssize_t k = 0; k < n_if && rc == 0; k++) {
        PyObject *it = PySequence_Fast_GET_ITEM(ifaces, k);
        PyObject *lt = PyObject_GetAttrString(it, "linktype");
        PyObject *ps = lt ? PyObject_GetAttrString(it, "per_sec") : NULL;
        PyObject *ou = ps ? PyObject_GetAttrString(it, "offset_units") : NULL;
        if (ou == NULL) {
            rc = -1;
        } else {
            ifs[k].linktype = as_int(lt);
            ifs[k].per_sec = PyLong_AsUnsignedLongLong(ps);
            ifs[k].offset = PyLong_AsLongLong(ou);
            if (PyErr_Occurred()) {
                /* a resolution or offset too large for 64 bits: leave this interface's
                 * packets to CaptureReader (per_sec 0 marks it) */
                PyErr_Clear();
                ifs[k].per_sec = 0;
            }
        }
        Py_XDECREF(lt);
        Py_XDECREF(ps);
        Py_XDECREF(ou);
    }
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    while (rc == 0 && end - pos >= 12) {
        const unsigned char *blk = buf + pos;
        uint32_t type = rd32(blk, swapped), length = rd32(blk + 4, swapped);
        if (type != PCAPNG_EPB || length < 12 || length % 4 || length > PCAPNG_MAX_BLOCK ||
            (Py_ssize_t)length > end - pos || rd32(blk + length - 4, swapped) != length ||
            length - 12 < PCAPNG_EPB_FIXED)
            break;
        uint32_t ifid = rd32(blk + 8, swapped), caplen = rd32(blk + 20, swapped);
        if (ifid >= (uint64_t)n_if || ifs[ifid].per_sec == 0 ||
            (uint64_t)caplen > (uint64_t)(length - 12 - PCAPNG_EPB_FIXED))
            break;
        uint64_t units = (uint64_t)rd32(blk + 12, swapped) << 32 | rd32(blk + 16, swapped);
        double ts;
        if (record_ts(0, units, ifs[ifid].per_sec, ifs[ifid].offset, &ts) < 0 ||
            walk_frame(self, &w, restart_below, ts, ifs[ifid].linktype, blk + 28, caplen) < 0) {
            rc = -1;
            break;
        }
        pos += length;
    }
    PyMem_Free(ifs);
    Py_DECREF(ifaces);
    PyBuffer_Release(&view);
    if (entered)
        leave(self, rc);
    return rc < 0 ? NULL : walk_result(&w, pos, skipped);
}

static int
bytes_arg(PyObject *o, Py_ssize_t want, const unsigned char **out, const char *what)
{
    if (o == Py_None && want == 6) {
        *out = NULL;
        return 0;
    }
    if (!PyBytes_Check(o) || (want == 6 ? PyBytes_GET_SIZE(o) == 0 : 0)) {
        if (PyBytes_Check(o) && want == 6) {  /* b"": no MAC, as Python's falsy check */
            *out = NULL;
            return 0;
        }
        PyErr_Format(PyExc_TypeError, "packet tuple: %s must be bytes", what);
        return -1;
    }
    if (want == 6 && PyBytes_GET_SIZE(o) != 6) {
        PyErr_Format(PyExc_ValueError, "packet tuple: %s must be 6 bytes", what);
        return -1;
    }
    *out = (const unsigned char *)PyBytes_AS_STRING(o);
    return 0;
}

/* packet(pkt_no, ts, pkt): a packet already parsed (capture.parse_packet's tuple) */
static PyObject *
table_packet(FlowTableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != 11) {
        PyErr_SetString(PyExc_TypeError, "packet(pkt_no, ts, (src_mac, dst_mac, src_ip, dst_ip, "
                        "proto, sport, dport, flags, seq, ack, payload))");
        return NULL;
    }
    long long pkt_no;
    double ts;
    if (read_clock(args, &pkt_no, &ts) < 0)
        return NULL;
    PyObject *t = args[2];
    Input in = {0};
    Packet *p = &in.p;
    PyObject *sip = PyTuple_GET_ITEM(t, 2), *dip = PyTuple_GET_ITEM(t, 3), *payload = PyTuple_GET_ITEM(t, 10);
    if (bytes_arg(PyTuple_GET_ITEM(t, 0), 6, &p->src_mac, "src_mac") < 0 ||
        bytes_arg(PyTuple_GET_ITEM(t, 1), 6, &p->dst_mac, "dst_mac") < 0 ||
        bytes_arg(sip, 0, &p->src_ip, "src_ip") < 0 || bytes_arg(dip, 0, &p->dst_ip, "dst_ip") < 0)
        return NULL;
    if (PyBytes_GET_SIZE(sip) != PyBytes_GET_SIZE(dip) ||
        (PyBytes_GET_SIZE(sip) != 4 && PyBytes_GET_SIZE(sip) != 16)) {
        PyErr_SetString(PyExc_ValueError, "packet tuple: addresses must both be 4 or 16 bytes");
        return NULL;
    }
    if (!PyBytes_Check(payload)) {
        PyErr_SetString(PyExc_TypeError, "packet tuple: payload must be bytes");
        return NULL;
    }
    p->ip_len = (int)PyBytes_GET_SIZE(sip);
    p->proto = as_int(PyTuple_GET_ITEM(t, 4));
    p->sport = as_int(PyTuple_GET_ITEM(t, 5));
    p->dport = as_int(PyTuple_GET_ITEM(t, 6));
    p->flags = as_int(PyTuple_GET_ITEM(t, 7));
    p->seq = (uint32_t)PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(t, 8));
    p->ack = (uint32_t)PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(t, 9));
    if (PyErr_Occurred())
        return NULL;
    if (p->proto < 0 || p->proto > 255 || p->sport < 0 || p->sport > 65535 || p->dport < 0 || p->dport > 65535) {
        PyErr_SetString(PyExc_ValueError, "packet tuple: proto must be 0..255 and ports 0..65535");
        return NULL;
    }
    in.payload = payload;
    p->payload_len = PyBytes_GET_SIZE(payload);
    if (enter(self) < 0)
        return NULL;
    return done(self, packet_in(self, pkt_no, ts, &in));
}

static PyObject *
table_tick(FlowTableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "tick(pkt_no, ts)");
        return NULL;
    }
    /* pkt_no may be a fraction: Engine.sweep passes the clock, which can be between packets */
    double pkt_no = PyFloat_AsDouble(args[0]), ts = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred() || enter(self) < 0)
        return NULL;
    return done(self, tick(self, pkt_no, ts));
}

static PyObject *
table_retire_all(FlowTableObject *self, PyObject *arg)
{
    double pkt_no = PyFloat_AsDouble(arg);
    if ((pkt_no == -1.0 && PyErr_Occurred()) || enter(self) < 0)
        return NULL;
    return done(self, retire_all(self, pkt_no));
}

static PyObject *
table_finish(FlowTableObject *self, PyObject *Py_UNUSED(ignored))
{
    if (enter(self) < 0)
        return NULL;
    int rc = retire_all(self, INFINITY);
    for (int i = 0; i < 2; i++)
        if (rc == 0 && self->tally[i].add_item != NULL)
            rc = tally_flush(&self->tally[i]);
    return done(self, rc);
}

/* tally_by(tally, counts, add_apart, add_item, limit): count events, or flows (tally.record
 * is model.Flow), by the keys of an otsec.analysis.tally.Tally into counts (one dict per
 * key), with at most limit new keys between two additions to the dicts. */
static PyObject *
table_tally_by(FlowTableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit;
    if (nargs != 5 || !PyCallable_Check(args[2]) || !PyCallable_Check(args[3])
        || (limit = PyLong_AsSsize_t(args[4])) < 1 || limit > TALLY_MAX_SLOTS) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "tally_by(tally, counts: tuple of dicts, add_apart: callable, "
                            "add_item: callable, limit: int from 1 to 2**24)");
        return NULL;
    }
    PyObject *record = PyObject_GetAttrString(args[0], "record");
    if (record == NULL)
        return NULL;
    int flows = record == (PyObject *)otsec_Flow;
    if (!flows && record != (PyObject *)otsec_Event) {
        PyErr_Format(PyExc_ValueError, "tally_by: counts model.Event or model.Flow, not %R", record);
        Py_DECREF(record);
        return NULL;
    }
    Py_DECREF(record);
    Tally *t = &self->tally[flows ? TALLY_FLOWS : TALLY_EVENTS];
    if (t->add_item != NULL) {
        PyErr_Format(PyExc_RuntimeError, "tally_by: %s are already counted", flows ? "flows" : "events");
        return NULL;
    }
    t->type = flows ? otsec_Flow : otsec_Event;
    t->offset = flows ? otsec_flow_offset : otsec_event_offset;
    t->index_of = flows ? otsec_flow_field_index : otsec_event_field_index;
    PyObject *keys = PyObject_GetAttrString(args[0], "keys");
    PyObject *when = keys == NULL ? NULL : PyObject_GetAttrString(args[0], "when");
    PyObject *apart = when == NULL ? NULL : PyObject_GetAttrString(args[0], "apart");
    PyObject *apart_seq = apart == NULL ? NULL : PySequence_Fast(apart, "tally_by: apart must be a sequence");
    t->server_ports = apart_seq == NULL ? NULL : PyObject_GetAttrString(args[0], "server_ports");
    int rc = t->server_ports == NULL ? -1 : !PyTuple_Check(when) ? (PyErr_SetString(
        PyExc_TypeError, "tally_by: when must be a tuple"), -1) : tally_keys(t, keys, when, args[1]);
    for (Py_ssize_t i = 0; rc == 0 && i < PySequence_Fast_GET_SIZE(apart_seq); i++) {
        int index = i < EV_FIELDS ? tally_field_index(t, PySequence_Fast_GET_ITEM(apart_seq, i)) : -1;
        if (index < 0)
            rc = -1;
        else
            t->apart[t->napart++] = index;
    }
    Py_XDECREF(keys);
    Py_XDECREF(when);
    Py_XDECREF(apart);
    Py_XDECREF(apart_seq);
    if (rc == 0) {
        t->keys = PyMem_Calloc(limit, sizeof *t->keys);
        t->counts = PyMem_Calloc(limit, sizeof *t->counts);
        t->owner = PyMem_Calloc(limit, sizeof *t->owner);
        t->ports_known = PyDict_New();
        if (t->keys == NULL || t->counts == NULL || t->owner == NULL || t->ports_known == NULL)
            rc = -1;
        size_t size = 2;
        while (size < 2 * (size_t)limit)
            size <<= 1;
        for (int k = 0; k < t->nkeys && rc == 0; k++) {
            t->key[k].table = PyMem_Malloc(size * sizeof(TallyEntry));
            t->key[k].mask = size - 1;
            if (t->key[k].table == NULL)
                rc = -1;
            else
                memset(t->key[k].table, 0xff, size * sizeof(TallyEntry));
        }
    }
    if (rc < 0) {
        tally_clear(t);
        t->napart = 0;
        t->needs_detail = 0;
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    t->limit = limit;
    t->add_apart = Py_NewRef(args[2]);
    t->add_item = Py_NewRef(args[3]);
    Py_RETURN_NONE;
}

static PyObject *
table_open_flows(FlowTableObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Conn *c = self->first; c; c = c->next) {
        if (conn_sync(c) < 0 || PyList_Append(out, c->flow) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *
table_get_open_count(FlowTableObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->open);
}

static PyObject *
table_get_clock(FlowTableObject *self, void *closure)
{
    double cp = self->clock_packet;
    if (isfinite(cp) && cp == floor(cp) && fabs(cp) < 9e15)
        return Py_BuildValue("(lL)", self->source_index, (long long)cp);
    return Py_BuildValue("(ld)", self->source_index, cp);
}

static PyObject *
table_get_capture(FlowTableObject *self, void *closure)
{
    Py_INCREF(self->capture);
    return self->capture;
}

static int
table_set_capture(FlowTableObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "capture must be a str");
        return -1;
    }
    Py_INCREF(value);
    Py_SETREF(self->capture, value);
    return 0;
}

static PyObject *
table_get_emitting(FlowTableObject *self, void *closure)
{
    Py_INCREF(self->emitting);
    return self->emitting;
}

/* The attributes every method reads exist from the start, initialised or not. */
static PyObject *
table_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    FlowTableObject *self = (FlowTableObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->counters = Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:i}", "flows", 0, "flows_timed_out", 0,
                                   "flows_evicted", 0, "retransmitted_bytes", 0,
                                   "overlap_conflicts", 0, "gap_bytes", 0);
    self->capture = PyUnicode_FromString("");
    self->emitting = Py_BuildValue("(ii)", 0, 0);
    if (!self->counters || !self->capture || !self->emitting) {
        Py_DECREF(self);
        return NULL;
    }
    self->sweep_floor = -INFINITY;
    return (PyObject *)self;
}

static int
table_init(FlowTableObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"decoders", "ports", "on_event", "on_flow", "health", "max_flows",
                             "tcp_idle", "udp_idle", "closed_linger", "shard", NULL};
    PyObject *decoders, *ports, *on_event, *on_flow, *health, *shard = Py_None;
    long max_flows = DEFAULT_MAX_FLOWS;
    double tcp_idle = DEFAULT_TCP_IDLE, udp_idle = DEFAULT_UDP_IDLE, closed_linger = CLOSED_LINGER;
    if (self->decoders != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FlowTable is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO|$ldddO", kwlist, &decoders, &ports,
                                     &on_event, &on_flow, &health, &max_flows, &tcp_idle,
                                     &udp_idle, &closed_linger, &shard))
        return -1;
    if (shard != Py_None && !PyArg_ParseTuple(shard, "ii", &self->shard_index, &self->shard_count))
        return -1;
    if (shard != Py_None && self->shard_count <= 0) {
        PyErr_SetString(PyExc_ValueError, "shard count must be positive");
        return -1;
    }
    PyObject *maps = PyObject_CallFunctionObjArgs(py_port_maps, decoders, ports, NULL);
    if (maps == NULL)
        return -1;
    if (!PyArg_ParseTuple(maps, "OO", &self->by_port, &self->ports_of)) {
        Py_DECREF(maps);
        return -1;
    }
    Py_INCREF(self->by_port);
    Py_INCREF(self->ports_of);
    Py_DECREF(maps);
    Py_INCREF(decoders);
    self->decoders = decoders;
    Py_INCREF(on_event);
    self->on_event = on_event;
    Py_INCREF(on_flow);
    self->on_flow = on_flow;
    Py_INCREF(health);
    self->health = health;
    self->max_flows = max_flows;
    self->tcp_idle = tcp_idle;
    self->udp_idle = udp_idle;
    self->closed_linger = closed_linger;
    return 0;
}

static int
table_traverse(FlowTableObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->decoders);
    Py_VISIT(self->by_port);
    Py_VISIT(self->ports_of);
    Py_VISIT(self->on_event);
    Py_VISIT(self->on_flow);
    Py_VISIT(self->health);
    Py_VISIT(self->counters);
    for (int i = 0; i < 2; i++) {
        Tally *t = &self->tally[i];
        Py_VISIT(t->add_apart);
        Py_VISIT(t->add_item);
        Py_VISIT(t->server_ports);
        Py_VISIT(t->ports_known);
        for (int k = 0; k < t->nkeys; k++) {
            Py_VISIT(t->key[k].into);
            Py_VISIT(t->key[k].when_value);
        }
        for (Py_ssize_t j = 0; j < t->used; j++)
            Py_VISIT(t->keys[j]);
    }
    for (Conn *c = self->first; c; c = c->next) {
        Py_VISIT(c->flow);
        if (c->session) {
            Py_VISIT(c->session->state);
            Py_VISIT(c->session->pending);
            Py_VISIT(c->session->decode);
            Py_VISIT(c->session->frame);
            Py_VISIT(c->session->probe);
        }
    }
    return 0;
}

static void
free_conns(FlowTableObject *self)
{
    while (self->first) {
        Conn *c = self->first;
        self->first = c->next;
        conn_free(c);
    }
    self->last = NULL;
    self->open = 0;
    while (self->graveyard) {
        Conn *c = self->graveyard;
        self->graveyard = c->next;
        conn_free(c);
    }
    PyMem_Free(self->buckets);
    self->buckets = NULL;
    self->nbuckets = self->nentries = 0;
}

static int
table_clear(FlowTableObject *self)
{
    free_conns(self);
    Py_CLEAR(self->decoders);
    Py_CLEAR(self->by_port);
    Py_CLEAR(self->ports_of);
    Py_CLEAR(self->on_event);
    Py_CLEAR(self->on_flow);
    Py_CLEAR(self->health);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->capture);
    Py_CLEAR(self->emitting);
    tally_clear(&self->tally[TALLY_EVENTS]);
    tally_clear(&self->tally[TALLY_FLOWS]);
    return 0;
}

static void
table_dealloc(FlowTableObject *self)
{
    PyObject_GC_UnTrack(self);
    table_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef table_methods[] = {
    {"frame", (PyCFunction)(void (*)(void))table_frame, METH_FASTCALL,
     "frame(pkt_no, ts, linktype, frame) -> reason or None: parse a captured frame and process it"},
    {"walk_pcap", (PyCFunction)(void (*)(void))table_walk_pcap, METH_FASTCALL,
     "walk_pcap(buf, pos, number, swapped, per_sec, linktype, limit, skipped, restart_below): "
     "process the whole classic-pcap records of a read buffer"},
    {"walk_pcapng", (PyCFunction)(void (*)(void))table_walk_pcapng, METH_FASTCALL,
     "walk_pcapng(buf, pos, number, swapped, interfaces, skipped, restart_below): "
     "process the well-formed enhanced packet blocks of a read buffer"},
    {"packet", (PyCFunction)(void (*)(void))table_packet, METH_FASTCALL,
     "packet(pkt_no, ts, pkt): process a packet parsed by otsec.capture.parse_packet"},
    {"tick", (PyCFunction)(void (*)(void))table_tick, METH_FASTCALL,
     "tick(pkt_no, ts): advance time, retire idle connections"},
    {"retire_all", (PyCFunction)table_retire_all, METH_O,
     "retire_all(pkt_no): report every connection still open"},
    {"finish", (PyCFunction)table_finish, METH_NOARGS, "end of input: report every open connection"},
    {"tally_by", (PyCFunction)(void (*)(void))table_tally_by, METH_FASTCALL,
     "tally_by(tally, counts, add_apart, add_item, limit): count events (or flows) by the keys of "
     "an otsec.analysis.tally.Tally into counts, one dict per key (added to at the latest at finish)"},
    {"open_flows", (PyCFunction)table_open_flows, METH_NOARGS,
     "the connections tracked now, as their (still growing) flow records"},
    {NULL}
};

static PyMemberDef table_members[] = {
    {"counters", T_OBJECT, offsetof(FlowTableObject, counters), READONLY, "run counters"},
    {"source_index", T_LONG, offsetof(FlowTableObject, source_index), 0, "index of the current source"},
    {"max_flows", T_LONG, offsetof(FlowTableObject, max_flows), READONLY, "connections held at once"},
    {NULL}
};

static PyGetSetDef table_getset[] = {
    {"open_count", (getter)table_get_open_count, NULL, "connections tracked now", NULL},
    {"clock", (getter)table_get_clock, NULL, "(source index, packet) being processed", NULL},
    {"capture", (getter)table_get_capture, (setter)table_set_capture, "current capture name", NULL},
    {"emitting", (getter)table_get_emitting, NULL, "connection whose output is being emitted", NULL},
    {NULL}
};

static PyTypeObject FlowTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otsec.flow._fast.FlowTable",
    .tp_doc = "The compiled twin of otsec.flow.table.FlowTable (same results, faster).",
    .tp_basicsize = sizeof(FlowTableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = table_new,
    .tp_init = (initproc)table_init,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_traverse = (traverseproc)table_traverse,
    .tp_clear = (inquiry)table_clear,
    .tp_methods = table_methods,
    .tp_members = table_members,
    .tp_getset = table_getset,
};

/* decode_<name>(msg, from_client, state): a compiled decoder called from Python, for the
 * tests that compare it with its Python twin (NotImplemented: left to the Python one). */
static PyObject *
call_cdecode(cdecode_fn fn, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "decode(msg: bytes, from_client, state)");
        return NULL;
    }
    int from_client = PyObject_IsTrue(args[1]);
    if (from_client < 0)
        return NULL;
    return fn(args[0], from_client, args[2]);
}

/* The (buf, pos) arguments of a frame or probe twin called from Python: 0, or -1. */
static int
buf_pos_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *pos)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "expected (buf: bytes, pos: int)");
        return -1;
    }
    *pos = PyLong_AsSsize_t(args[1]);
    if (*pos == -1 && PyErr_Occurred())
        return -1;
    if (*pos < 0) {
        PyErr_SetString(PyExc_ValueError, "pos must not be negative");
        return -1;
    }
    return 0;
}

/* frame_<name>(buf, pos): a frame twin called from Python, for the tests. */
static PyObject *
call_cframe(cframe_fn fn, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t pos;
    if (buf_pos_args(args, nargs, &pos) < 0)
        return NULL;
    return PyLong_FromSsize_t(fn((const unsigned char *)PyBytes_AS_STRING(args[0]),
                                 PyBytes_GET_SIZE(args[0]), pos));
}

/* probe_<name>(buf, pos): True, False, or None where the twin leaves it to Python. */
static PyObject *
call_cprobe(cprobe_fn fn, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t pos;
    if (buf_pos_args(args, nargs, &pos) < 0)
        return NULL;
    int r = fn((const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), pos);
    return r == OTSEC_PROBE_UNSURE ? Py_NewRef(Py_None) : PyBool_FromLong(r);
}

/* frame_<name>(buf, pos), probe_<name>(buf, pos) and decode_<name>(msg, from_client, state):
 * each twin called from Python, for the tests that compare it with its Python original. */
#define TWIN_WRAPPERS(name)                                                               \
    static PyObject *py_frame_##name(PyObject *m, PyObject *const *args, Py_ssize_t nargs) \
    {                                                                                     \
        return call_cframe(otsec_##name##_frame, args, nargs);                            \
    }                                                                                     \
    static PyObject *py_probe_##name(PyObject *m, PyObject *const *args, Py_ssize_t nargs) \
    {                                                                                     \
        return call_cprobe(otsec_##name##_probe, args, nargs);                            \
    }                                                                                     \
    static PyObject *py_decode_##name(PyObject *m, PyObject *const *args, Py_ssize_t nargs) \
    {                                                                                     \
        return call_cdecode(otsec_##name##_decode, args, nargs);                          \
    }
TWIN_WRAPPERS(modbus)
TWIN_WRAPPERS(s7comm)
TWIN_WRAPPERS(opcua)

#define TWIN_METHODS(name)                                                                \
    {"frame_" #name, (PyCFunction)(void (*)(void))py_frame_##name, METH_FASTCALL,          \
     "the compiled twin of otsec.decoders." #name ".frame"},                               \
    {"probe_" #name, (PyCFunction)(void (*)(void))py_probe_##name, METH_FASTCALL,          \
     "the compiled twin of otsec.decoders." #name ".probe (None: left to it)"},            \
    {"decode_" #name, (PyCFunction)(void (*)(void))py_decode_##name, METH_FASTCALL,        \
     "the compiled twin of otsec.decoders." #name ".decode (NotImplemented: not covered)"}

static PyMethodDef module_methods[] = {
    {"parse_packet", (PyCFunction)(void (*)(void))py_parse_packet, METH_FASTCALL,
     "parse_packet(linktype, frame): the same result as otsec.capture.parse_packet"},
    TWIN_METHODS(modbus),
    TWIN_METHODS(s7comm),
    TWIN_METHODS(opcua),
    {NULL}
};

static struct PyModuleDef fast_module = {
    PyModuleDef_HEAD_INIT, "otsec.flow._fast",
    "The compiled flow layer: the C twin of otsec.flow.table/reassembly/session.", -1, module_methods,
};

static int
get_double(PyObject *mod, const char *name, double *out)
{
    PyObject *v = PyObject_GetAttrString(mod, name);
    if (v == NULL)
        return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int
intern_names(void)
{
#define I(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1
    I(S_capture, "capture"); I(S_flow_id, "flow_id"); I(S_src_ip, "src_ip");
    I(S_src_port, "src_port"); I(S_src_mac, "src_mac"); I(S_dst_ip, "dst_ip");
    I(S_dst_port, "dst_port"); I(S_dst_mac, "dst_mac"); I(S_packet, "packet"); I(S_ts, "ts");
    I(S_protocol, "protocol"); I(S_pair_key, "pair_key"); I(S_kind, "kind");
    I(S_anomalies, "anomalies"); I(S_request_packet, "request_packet"); I(S_targets, "targets");
    I(S_detail_dot, "detail."); I(S_request, "request"); I(S_response, "response"); I(S_name, "name"); I(S_probe, "probe");
    I(S_frame, "frame"); I(S_decode, "decode"); I(S_new_state, "new_state");
    I(S_decoded, "decoded"); I(S_app, "app"); I(S_client_ip, "client_ip");
    I(S_server_ip, "server_ip"); I(S_client_port, "client_port"); I(S_server_port, "server_port");
    I(S_last_ts, "last_ts"); I(S_last_packet, "last_packet"); I(S_packets_c2s, "packets_c2s");
    I(S_packets_s2c, "packets_s2c"); I(S_bytes_c2s, "bytes_c2s"); I(S_bytes_s2c, "bytes_s2c");
    I(S_client_mac, "client_mac"); I(S_server_mac, "server_mac"); I(S_events, "events");
    I(S_gaps, "gaps"); I(S_tcp_overlap, "tcp.overlap_conflict"); I(S_messages, "messages");
    I(S_anomalous, "anomalous"); I(S_h_gaps, "gaps"); I(S_resyncs, "resyncs");
    I(S_unframeable_bytes, "unframeable_bytes"); I(S_buffer_overflows, "buffer_overflows");
    I(S_unpaired_responses, "unpaired_responses"); I(S_unanswered_requests, "unanswered_requests");
    I(S_truncated_at_eof, "truncated_at_eof"); I(S_decoder_errors, "decoder_errors");
    I(S_flows, "flows"); I(S_flows_timed_out, "flows_timed_out"); I(S_flows_evicted, "flows_evicted");
    I(S_retransmitted_bytes, "retransmitted_bytes"); I(S_overlap_conflicts, "overlap_conflicts");
    I(S_gap_bytes, "gap_bytes"); I(S_append, "append");
#undef I
    return 0;
}

/* The limits and helpers shared with the Python twin. */
static int
load_python_side(void)
{
    PyObject *table = PyImport_ImportModule("otsec.flow.table");
    PyObject *reasm = table ? PyImport_ImportModule("otsec.flow.reassembly") : NULL;
    PyObject *sess = reasm ? PyImport_ImportModule("otsec.flow.session") : NULL;
    int rc = -1;
    long v;
    if (sess == NULL)
        goto done;
    if (otsec_module_long(table, "DETECTION_ATTEMPTS", &DETECTION_ATTEMPTS) < 0 ||
        otsec_module_long(table, "DETECTION_WINDOW", &DETECTION_WINDOW) < 0 ||
        otsec_module_long(table, "MAX_MESSAGE_AWAITED", &MAX_MESSAGE_AWAITED) < 0 ||
        otsec_module_long(table, "MAX_HELD_SEGMENTS", &MAX_HELD_SEGMENTS) < 0 ||
        otsec_module_long(table, "DEFAULT_MAX_FLOWS", &DEFAULT_MAX_FLOWS) < 0 ||
        get_double(table, "DEFAULT_TCP_IDLE", &DEFAULT_TCP_IDLE) < 0 ||
        get_double(table, "DEFAULT_UDP_IDLE", &DEFAULT_UDP_IDLE) < 0 ||
        get_double(table, "CLOSED_LINGER", &CLOSED_LINGER) < 0 ||
        get_double(table, "SWEEP_INTERVAL", &SWEEP_INTERVAL) < 0 ||
        otsec_module_long(reasm, "MAX_QUEUED_SEGMENTS", &MAX_QUEUED_SEGMENTS) < 0 ||
        otsec_module_long(reasm, "MAX_QUEUED_BYTES", &MAX_QUEUED_BYTES) < 0)
        goto done;
    if (otsec_module_long(sess, "MAX_BUFFERED_BYTES", &v) < 0)
        goto done;
    MAX_BUFFERED_BYTES = v;
    if (otsec_module_long(sess, "SYNC_TAIL", &v) < 0)
        goto done;
    SYNC_TAIL = v;
    if (otsec_module_long(sess, "MAX_PENDING_REQUESTS", &v) < 0)
        goto done;
    MAX_PENDING_REQUESTS = v;
    for (size_t k = 0; k < N_TWINS; k++) {
        PyObject *mod = PyImport_ImportModule(TWINS[k].module);
        if (mod == NULL)
            goto done;
        TWINS[k].decode = PyObject_GetAttrString(mod, "decode");
        TWINS[k].frame = PyObject_GetAttrString(mod, "frame");
        TWINS[k].probe = PyObject_GetAttrString(mod, "probe");
        Py_DECREF(mod);
        if (TWINS[k].decode == NULL || TWINS[k].frame == NULL || TWINS[k].probe == NULL)
            goto done;
    }
    if (new_flow_init(table) < 0 ||
        !(py_detect = PyObject_GetAttrString(table, "detect")) ||
        !(py_port_maps = PyObject_GetAttrString(table, "port_maps")))
        goto done;
    rc = 0;
done:
    Py_XDECREF(table);
    Py_XDECREF(reasm);
    Py_XDECREF(sess);
    return rc;
}

PyMODINIT_FUNC
PyInit__fast(void)
{
    if (intern_names() < 0 || load_python_side() < 0 || parse_init() < 0 || otsec_model_init() < 0 ||
        otsec_modbus_init() < 0 || otsec_s7comm_init() < 0 || otsec_opcua_init() < 0)
        return NULL;
    if (!(EMPTY_BYTES = PyBytes_FromStringAndSize(NULL, 0)))
        return NULL;
    if (PyType_Ready(&FlowTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fast_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FlowTableType);
    if (PyModule_AddObject(m, "FlowTable", (PyObject *)&FlowTableType) < 0) {
        Py_DECREF(&FlowTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
