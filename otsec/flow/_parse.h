/* Link, IP and TCP/UDP header parsing for the compiled flow layer: the C twin of
 * otsec/capture/packet.py (the reference; tests require both to agree on every frame).
 *
 * INTERFACE (used by _fast.c; keep it):
 *   parse_frame(linktype, frame, len, &pkt) -> PARSED or a reason (R_*), never reads
 *       outside frame[0:len].
 *   parse_init() -> 0, or -1 with an exception set: fills REASON_NAMES from
 *       otsec.capture.packet (called once by the module's init).
 *   py_parse_packet(module, args, nargs): METH_FASTCALL parse_packet(linktype, frame),
 *       returning exactly what otsec.capture.packet.parse_packet returns.
 */
#ifndef OTSEC_PARSE_H
#define OTSEC_PARSE_H

#include <Python.h>
#include <stdint.h>

typedef struct {
    const unsigned char *src_mac, *dst_mac;  /* 6 bytes each; NULL when the link has none */
    const unsigned char *src_ip, *dst_ip;    /* ip_len bytes each, inside the frame */
    int ip_len;                              /* 4 or 16 */
    int proto, sport, dport, flags;          /* ports/flags 0 where the Python twin gives 0 */
    uint32_t seq, ack;
    Py_ssize_t payload, payload_len;         /* payload offset in the frame and its length */
} Packet;

enum { PARSED = 0, R_NON_IP, R_IP_FRAGMENT, R_TRUNCATED, R_BAD_HEADER, R_UNSUPPORTED_LINKTYPE,
       R_COUNT };

/* The reason strings of otsec.capture.packet.REASONS, indexed by R_* (index 0 unused). */
static PyObject *REASON_NAMES[R_COUNT];

static int parse_frame(int linktype, const unsigned char *frame, Py_ssize_t len, Packet *out);
static int parse_init(void);
static PyObject *py_parse_packet(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#include <limits.h>

/* Link types (pcap registry numbers) and header constants: the same names and values as
 * otsec/capture/packet.py. */
enum {
    LT_NULL = 0, LT_ETHERNET = 1, LT_RAW_BSD12 = 12, LT_RAW_BSD14 = 14, LT_RAW = 101,
    LT_LOOP = 108, LT_LINUX_SLL = 113, LT_IPV4 = 228, LT_IPV6 = 229, LT_LINUX_SLL2 = 276,
};
enum {
    ETHERTYPE_IPV4 = 0x0800, ETHERTYPE_IPV6 = 0x86DD,
    TPID_8021Q = 0x8100, TPID_8021AD = 0x88A8, TPID_QINQ_OLD = 0x9100,
    BSD_AF_INET = 2, BSD_AF_INET6_NETBSD = 24, BSD_AF_INET6_FREEBSD = 28,
    BSD_AF_INET6_DARWIN = 30,
    ARPHRD_ADDR_LEN_ETHER = 6,
    IPPROTO_TCP_ = 6, IPPROTO_UDP_ = 17,
    IPV6_HOP_BY_HOP = 0, IPV6_ROUTING = 43, IPV6_FRAGMENT = 44, IPV6_DEST_OPTS = 60,
    IPV4_FRAG_MASK = 0x3FFF, IPV6_FRAG_MASK = 0xFFF9,
    ETH_LEN = 14, SLL_LEN = 16, SLL2_LEN = 20, NULL_LEN = 4, VLAN_TAG_LEN = 4,
    IPV4_MIN_LEN = 20, IPV6_HEADER_LEN = 40, IPV6_FRAG_READ = 4, IPV6_FRAG_LEN = 8,
    TCP_READ = 14, TCP_MIN_LEN = 20, UDP_READ = 6, UDP_LEN = 8,
};

static inline unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

static inline uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Where the Python twin raises struct.error/IndexError (a read past the frame) this returns
 * R_TRUNCATED at the same point; _overrun's capture-cut vs lying-length test is this one. */
static inline int overrun(Py_ssize_t pos, Py_ssize_t len)
{
    return pos > len ? R_TRUNCATED : R_BAD_HEADER;
}

static int parse_transport(const unsigned char *f, Py_ssize_t len, Py_ssize_t off,
                           Py_ssize_t end, int proto, Packet *out)
{
    Py_ssize_t data;
    out->proto = proto;
    if (proto == IPPROTO_TCP_) {
        if (off + TCP_READ > len)
            return R_TRUNCATED;
        const unsigned char *h = f + off;
        int header = (h[12] >> 4) << 2;
        if (header < TCP_MIN_LEN)
            return R_BAD_HEADER;
        data = off + header;
        if (data > end)
            return overrun(data, len);
        out->sport = (int)be16(h);
        out->dport = (int)be16(h + 2);
        out->seq = be32(h + 4);
        out->ack = be32(h + 8);
        out->flags = h[13];
    } else if (proto == IPPROTO_UDP_) {
        if (off + UDP_READ > len)
            return R_TRUNCATED;
        const unsigned char *h = f + off;
        Py_ssize_t length = be16(h + 4);
        data = off + UDP_LEN;
        if (data > end)
            return overrun(data, len);
        if (length >= UDP_LEN && off + length < end)   /* UDP says less than IP: trust UDP */
            end = off + length;
        out->sport = (int)be16(h);
        out->dport = (int)be16(h + 2);
        out->seq = out->ack = 0;
        out->flags = 0;
    } else {
        data = off;
        out->sport = out->dport = out->flags = 0;
        out->seq = out->ack = 0;
    }
    out->payload = data;
    out->payload_len = end - data;
    return PARSED;
}

static int parse_ipv4(const unsigned char *f, Py_ssize_t len, Py_ssize_t off, Packet *out)
{
    if (off + IPV4_MIN_LEN > len)
        return R_TRUNCATED;
    const unsigned char *h = f + off;
    unsigned ihl = (h[0] & 0x0Fu) << 2;
    if (h[0] >> 4 != 4 || ihl < IPV4_MIN_LEN)
        return R_BAD_HEADER;
    unsigned total = be16(h + 2);
    Py_ssize_t end = len;   /* total 0: length left to TSO offload, take what is there */
    if (total) {
        if (total < ihl)
            return R_BAD_HEADER;
        if (off + (Py_ssize_t)total < len)
            end = off + total;
    }
    if (be16(h + 6) & IPV4_FRAG_MASK)
        return R_IP_FRAGMENT;
    off += ihl;
    if (off > end)
        return R_TRUNCATED;
    out->src_ip = h + 12;
    out->dst_ip = h + 16;
    out->ip_len = 4;
    return parse_transport(f, len, off, end, h[9], out);
}

static int parse_ipv6(const unsigned char *f, Py_ssize_t len, Py_ssize_t off, Packet *out)
{
    if (off + IPV6_HEADER_LEN > len)
        return R_TRUNCATED;
    const unsigned char *h = f + off;
    if (h[0] >> 4 != 6)
        return R_BAD_HEADER;
    unsigned plen = be16(h + 4);
    int proto = h[6];
    off += IPV6_HEADER_LEN;
    Py_ssize_t end = plen ? off + plen : len;   /* 0: jumbogram or TSO, take what is there */
    if (end > len)
        end = len;
    for (;;) {
        if (proto == IPV6_HOP_BY_HOP || proto == IPV6_ROUTING || proto == IPV6_DEST_OPTS) {
            if (off + 2 > len)   /* next header and length are read past end, up to len */
                return R_TRUNCATED;
            proto = f[off];
            off += ((Py_ssize_t)f[off + 1] + 1) << 3;
        } else if (proto == IPV6_FRAGMENT) {
            if (off + IPV6_FRAG_READ > len)
                return R_TRUNCATED;
            proto = f[off];
            if (be16(f + off + 2) & IPV6_FRAG_MASK)
                return R_IP_FRAGMENT;
            off += IPV6_FRAG_LEN;   /* atomic fragment (offset 0, M=0): the whole packet follows */
        } else {
            break;
        }
        if (off > end)
            return overrun(off, len);
    }
    out->src_ip = h + 8;
    out->dst_ip = h + 24;
    out->ip_len = 16;
    return parse_transport(f, len, off, end, proto, out);
}

static int parse_frame(int linktype, const unsigned char *frame, Py_ssize_t len, Packet *out)
{
    const unsigned char *f = frame;
    unsigned ethertype;
    Py_ssize_t off;
    out->src_mac = out->dst_mac = NULL;
    switch (linktype) {
    case LT_ETHERNET:
        if (len < ETH_LEN)
            return R_TRUNCATED;
        out->dst_mac = f;
        out->src_mac = f + 6;
        ethertype = be16(f + 12);
        off = ETH_LEN;
        break;
    case LT_LINUX_SLL:
        if (len < SLL_LEN)
            return R_TRUNCATED;
        if (be16(f + 4) == ARPHRD_ADDR_LEN_ETHER)
            out->src_mac = f + 6;
        ethertype = be16(f + 14);
        off = SLL_LEN;
        break;
    case LT_LINUX_SLL2:
        if (len < SLL2_LEN)
            return R_TRUNCATED;
        if (f[11] == ARPHRD_ADDR_LEN_ETHER)
            out->src_mac = f + 12;
        ethertype = be16(f);
        off = SLL2_LEN;
        break;
    case LT_NULL:
    case LT_LOOP: {
        if (len < NULL_LEN)
            return R_TRUNCATED;
        uint32_t family = le32(f);
        if (family & 0xFFFF0000u)   /* written big-endian: families are small numbers */
            family = be32(f);
        if (family == BSD_AF_INET)
            return parse_ipv4(f, len, NULL_LEN, out);
        if (family == BSD_AF_INET6_NETBSD || family == BSD_AF_INET6_FREEBSD
                || family == BSD_AF_INET6_DARWIN)
            return parse_ipv6(f, len, NULL_LEN, out);
        return R_NON_IP;
    }
    case LT_RAW:
    case LT_RAW_BSD12:
    case LT_RAW_BSD14:
        if (len < 1)
            return R_TRUNCATED;
        if (f[0] >> 4 == 4)
            return parse_ipv4(f, len, 0, out);
        if (f[0] >> 4 == 6)
            return parse_ipv6(f, len, 0, out);
        return R_BAD_HEADER;
    case LT_IPV4:
        return parse_ipv4(f, len, 0, out);
    case LT_IPV6:
        return parse_ipv6(f, len, 0, out);
    default:
        return R_UNSUPPORTED_LINKTYPE;
    }
    while (ethertype == TPID_8021Q || ethertype == TPID_8021AD || ethertype == TPID_QINQ_OLD) {
        if (off + VLAN_TAG_LEN > len)
            return R_TRUNCATED;
        ethertype = be16(f + off + 2);
        off += VLAN_TAG_LEN;
    }
    if (ethertype == ETHERTYPE_IPV4)
        return parse_ipv4(f, len, off, out);
    if (ethertype == ETHERTYPE_IPV6)
        return parse_ipv6(f, len, off, out);
    return R_NON_IP;
}

static int parse_init(void)
{
    static const char *const attrs[R_COUNT] = {
        [R_NON_IP] = "NON_IP", [R_IP_FRAGMENT] = "IP_FRAGMENT", [R_TRUNCATED] = "TRUNCATED",
        [R_BAD_HEADER] = "BAD_HEADER", [R_UNSUPPORTED_LINKTYPE] = "UNSUPPORTED_LINKTYPE",
    };
    PyObject *module = PyImport_ImportModule("otsec.capture.packet");
    if (module == NULL)
        return -1;
    for (int r = PARSED + 1; r < R_COUNT; r++) {
        PyObject *name = PyObject_GetAttrString(module, attrs[r]);
        if (name == NULL) {
            Py_DECREF(module);
            return -1;
        }
        Py_XSETREF(REASON_NAMES[r], name);
    }
    Py_DECREF(module);
    return 0;
}

/* None or a new 6-byte bytes object. */
static PyObject *mac_or_none(const unsigned char *mac)
{
    if (mac == NULL)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)mac, 6);
}

static PyObject *packet_tuple(const unsigned char *f, const Packet *p)
{
    PyObject *t = PyTuple_New(11);
    if (t == NULL)
        return NULL;
    PyObject *items[11] = {
        mac_or_none(p->src_mac),
        mac_or_none(p->dst_mac),
        PyBytes_FromStringAndSize((const char *)p->src_ip, p->ip_len),
        PyBytes_FromStringAndSize((const char *)p->dst_ip, p->ip_len),
        PyLong_FromLong(p->proto),
        PyLong_FromLong(p->sport),
        PyLong_FromLong(p->dport),
        PyLong_FromLong(p->flags),
        PyLong_FromUnsignedLong(p->seq),
        PyLong_FromUnsignedLong(p->ack),
        PyBytes_FromStringAndSize((const char *)f + p->payload, p->payload_len),
    };
    int failed = 0;
    for (int i = 0; i < 11; i++) {
        if (items[i] == NULL)
            failed = 1;
        PyTuple_SET_ITEM(t, i, items[i]);   /* a NULL slot is skipped by the tuple's dealloc */
    }
    if (failed) {
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

static PyObject *py_parse_packet(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "parse_packet() takes exactly 2 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (!PyLong_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "parse_packet() argument 1 must be int, not %.200s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    int overflow;
    long value = PyLong_AsLongAndOverflow(args[0], &overflow);
    if (value == -1 && PyErr_Occurred())
        return NULL;
    /* Any number out of int range is no known link type, as it is for the Python twin. */
    int linktype = (overflow || value < INT_MIN || value > INT_MAX) ? -1 : (int)value;

    Py_buffer view;
    const unsigned char *frame;
    Py_ssize_t len;
    int borrowed = PyBytes_Check(args[1]);
    if (borrowed) {
        frame = (const unsigned char *)PyBytes_AS_STRING(args[1]);
        len = PyBytes_GET_SIZE(args[1]);
    } else {
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        frame = view.buf;
        len = view.len;
    }
    Packet pkt;
    int reason = parse_frame(linktype, frame, len, &pkt);
    PyObject *result = reason == PARSED ? packet_tuple(frame, &pkt)
                                        : Py_NewRef(REASON_NAMES[reason]);
    if (!borrowed)
        PyBuffer_Release(&view);
    return result;
}

#endif
