/* A new connection's Flow record: the C twin of table.new_flow (and of community_id,
 * ip_text, _looks_like_client and services.service_name), included by _fast.c.
 *
 * It runs once per connection; in Python it was a fifth of the packet layer's time on the
 * benchmark (61,211 connections in 1M packets). The tables are read from the Python
 * modules (services.TCP_SERVICES / UDP_SERVICES, table._TRANSPORT), so they stay in one
 * place; the equivalence tests compare every flow field, Community ID included.
 */
#include <arpa/inet.h>
#include <sys/socket.h>

static PyObject *TCP_SERVICES, *UDP_SERVICES, *TRANSPORT_NAMES, *S_unknown_app;

/* --- SHA-1 (FIPS 180-4), for the Community ID: a few dozen bytes per connection ------------ */

static inline uint32_t
rotl32(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void
sha1_block(uint32_t h[5], const unsigned char *block)
{
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
               (uint32_t)block[4 * t + 2] << 8 | block[4 * t + 3];
    for (int t = 16; t < 80; t++)
        w[t] = rotl32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t temp = rotl32(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = rotl32(b, 30);
        b = a;
        a = temp;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

/* SHA-1 of a short message (at most 119 bytes: two blocks with the padding). */
static void
sha1_short(const unsigned char *msg, size_t len, unsigned char digest[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    unsigned char buf[128] = {0};
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    size_t total = len + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        buf[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64)
        sha1_block(h, buf + off);
    for (int i = 0; i < 5; i++) {
        digest[4 * i] = (unsigned char)(h[i] >> 24);
        digest[4 * i + 1] = (unsigned char)(h[i] >> 16);
        digest[4 * i + 2] = (unsigned char)(h[i] >> 8);
        digest[4 * i + 3] = (unsigned char)h[i];
    }
}

/* community_id(saddr, daddr, proto, sport, dport) with seed 0: "1:" + base64(SHA-1 of
 * seed, the smaller (address, port) side first, proto, a pad byte, and the ports for
 * TCP/UDP/SCTP). */
static PyObject *
community_id(const unsigned char *saddr, int sport, const unsigned char *daddr, int dport,
             int ip_len, int proto)
{
    int c = memcmp(saddr, daddr, ip_len);
    if (c > 0 || (c == 0 && sport > dport)) {
        const unsigned char *ta = saddr; saddr = daddr; daddr = ta;
        int tp = sport; sport = dport; dport = tp;
    }
    unsigned char data[2 + 32 + 2 + 4];
    size_t n = 0;
    data[n++] = 0;
    data[n++] = 0;
    memcpy(data + n, saddr, ip_len); n += ip_len;
    memcpy(data + n, daddr, ip_len); n += ip_len;
    data[n++] = (unsigned char)proto;
    data[n++] = 0;
    if (proto == 6 || proto == 17 || proto == 132) {
        data[n++] = (unsigned char)(sport >> 8); data[n++] = (unsigned char)sport;
        data[n++] = (unsigned char)(dport >> 8); data[n++] = (unsigned char)dport;
    }
    unsigned char digest[20];
    sha1_short(data, n, digest);
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char text[2 + 28 + 1] = "1:";
    char *out = text + 2;
    for (int i = 0; i < 21; i += 3) {   /* 20 bytes: six groups of 3, then 2 and one '=' */
        uint32_t v = (uint32_t)digest[i] << 16 | (uint32_t)(i + 1 < 20 ? digest[i + 1] : 0) << 8 |
                     (i + 2 < 20 ? digest[i + 2] : 0);
        *out++ = alphabet[(v >> 18) & 63];
        *out++ = alphabet[(v >> 12) & 63];
        *out++ = alphabet[(v >> 6) & 63];
        *out++ = i + 2 < 20 ? alphabet[v & 63] : '=';
    }
    return PyUnicode_FromStringAndSize(text, out - text);
}

/* The text of an address, shared: every connection between the same hosts holds the same
 * object (interned; freed with its last holder). The summary's counts keep a host pair's
 * addresses for the whole run: one copy per host, not one per connection that made the
 * key (~4 MiB on the 2M-packet benchmark), and equal keys then compare by identity. */
static PyObject *
shared_text(PyObject *text)
{
    if (text != NULL)
        PyUnicode_InternInPlace(&text);
    return text;
}

/* ip_text: socket.inet_ntop, as Python formats addresses (shared, as table.ip_text). */
static PyObject *
ip_text(const unsigned char *addr, int ip_len)
{
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(ip_len == 4 ? AF_INET : AF_INET6, addr, text, sizeof text) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    return shared_text(PyUnicode_FromString(text));
}

/* services.service_name(transport, port): a borrowed name, or NULL (error set or not). */
static PyObject *
service_name(int proto, int port)
{
    PyObject *table = proto == 6 ? TCP_SERVICES : proto == 17 ? UDP_SERVICES : NULL;
    if (table == NULL)
        return NULL;
    PyObject *key = PyLong_FromLong(port);
    if (key == NULL)
        return NULL;
    PyObject *name = PyDict_GetItemWithError(table, key);
    Py_DECREF(key);
    return name;
}

/* _looks_like_client: without a handshake, the side on a known service port is the server.
 * 1 or 0, -1 on error. */
static int
looks_like_client(PyObject *by_port, int proto, int sport, int dport)
{
    int known[2];
    int ports[2] = {dport, sport};
    for (int i = 0; i < 2; i++) {
        PyObject *key = PyLong_FromLong(ports[i]);
        int in = key ? PyDict_Contains(by_port, key) : -1;
        Py_XDECREF(key);
        if (in < 0)
            return -1;
        known[i] = in || service_name(proto, ports[i]) != NULL;
        if (PyErr_Occurred())
            return -1;
    }
    if (known[0] != known[1])
        return known[0];
    return sport >= dport;
}

/* The name of an IP protocol as Flow.transport gives it: "tcp", "udp", "icmp", "icmp6", else
 * "ip-<n>" (a new reference). */
static PyObject *
transport_name(int proto)
{
    PyObject *key = PyLong_FromLong(proto);
    if (key == NULL)
        return NULL;
    PyObject *name = PyDict_GetItemWithError(TRANSPORT_NAMES, key);
    Py_DECREF(key);
    if (name != NULL)
        return Py_NewRef(name);
    return PyErr_Occurred() ? NULL : PyUnicode_FromFormat("ip-%d", proto);
}

static inline int
flow_put(PyObject *flow, int field, PyObject *v)
{
    if (v == NULL)
        return -1;
    Py_XSETREF(*otsec_flow_field(flow, field), v);
    return 0;
}

/* new_flow: the Flow of a connection first seen in packet p, and whether its sender is the
 * client (known from a SYN, else guessed from the ports). */
static PyObject *
new_flow(PyObject *by_port, long long pkt_no, double ts, const Packet *p, int *sender_is_client)
{
    int known = p->proto == TCP && (p->flags & SYN);
    int client = known ? !(p->flags & ACK) : looks_like_client(by_port, p->proto, p->sport, p->dport);
    if (client < 0)
        return NULL;
    const unsigned char *cip = client ? p->src_ip : p->dst_ip, *sip = client ? p->dst_ip : p->src_ip;
    int cport = client ? p->sport : p->dport, sport = client ? p->dport : p->sport;
    PyObject *flow = otsec_flow_blank();
    if (flow == NULL)
        return NULL;
    PyObject *app = service_name(p->proto, sport);
    if ((app == NULL && PyErr_Occurred()) ||
        flow_put(flow, FL_FLOW_ID, community_id(p->src_ip, p->sport, p->dst_ip, p->dport, p->ip_len,
                                                p->proto)) < 0 ||
        flow_put(flow, FL_TRANSPORT, transport_name(p->proto)) < 0 ||
        flow_put(flow, FL_CLIENT_IP, ip_text(cip, p->ip_len)) < 0 ||
        flow_put(flow, FL_CLIENT_PORT, PyLong_FromLong(cport)) < 0 ||
        flow_put(flow, FL_SERVER_IP, ip_text(sip, p->ip_len)) < 0 ||
        flow_put(flow, FL_SERVER_PORT, PyLong_FromLong(sport)) < 0 ||
        flow_put(flow, FL_INITIATOR_KNOWN, PyBool_FromLong(known)) < 0 ||
        flow_put(flow, FL_APP, Py_NewRef(app ? app : S_unknown_app)) < 0 ||
        flow_put(flow, FL_FIRST_TS, PyFloat_FromDouble(ts)) < 0 ||
        flow_put(flow, FL_LAST_TS, PyFloat_FromDouble(ts)) < 0 ||
        flow_put(flow, FL_FIRST_PACKET, PyLong_FromLongLong(pkt_no)) < 0 ||
        flow_put(flow, FL_LAST_PACKET, PyLong_FromLongLong(pkt_no)) < 0) {
        Py_DECREF(flow);
        return NULL;
    }
    *sender_is_client = client;
    return flow;
}

/* The tables, from the Python modules: 0, or -1 with an exception. */
static int
new_flow_init(PyObject *table_module)
{
    PyObject *services = PyImport_ImportModule("otsec.flow.services");
    if (services == NULL)
        return -1;
    TCP_SERVICES = PyObject_GetAttrString(services, "TCP_SERVICES");
    UDP_SERVICES = PyObject_GetAttrString(services, "UDP_SERVICES");
    Py_DECREF(services);
    TRANSPORT_NAMES = PyObject_GetAttrString(table_module, "_TRANSPORT");
    S_unknown_app = PyUnicode_InternFromString("unknown");
    if (TCP_SERVICES == NULL || UDP_SERVICES == NULL || TRANSPORT_NAMES == NULL || S_unknown_app == NULL)
        return -1;
    if (!PyDict_Check(TCP_SERVICES) || !PyDict_Check(UDP_SERVICES) || !PyDict_Check(TRANSPORT_NAMES)) {
        PyErr_SetString(PyExc_ImportError, "otsec.flow: service and transport tables must be dicts");
        return -1;
    }
    return 0;
}
