/* Compiled decoders: C twins of the Python decoders' decode(), for the messages they cover.
 *
 * The Python decoder (otsec/decoders/<name>.py) is the reference and the fallback. Its C
 * twin is called first by the compiled flow layer (otsec/flow/_fast.c) with the same
 * arguments and must either
 *   - return a new list of Event objects equal in every field (detail keys in the same
 *     order, pair_key equal) to what the Python decode would return, having changed the
 *     per-connection state exactly as the Python decode would, or
 *   - return Py_NotImplemented (a new reference) WITHOUT having changed the state: the
 *     Python decode then handles the message, or
 *   - return NULL with an exception set (a bug: counted as a decoder error, like a raise).
 * A twin never reads outside msg and needs no state of its own beyond what it reads at
 * init from its Python module (name tables, constants, the Event/Target classes), so the
 * tables live in one place.
 *
 * Each twin lives in otsec/decoders/_<name>.c and exports:
 *   int       otsec_<name>_init(void)      0, or -1 with an exception (called at import)
 *   PyObject *otsec_<name>_decode(PyObject *msg, int from_client, PyObject *state)
 * and, where the decoder's frame() has a twin (the same answer for every input: the
 * message length, 0 for NEED_MORE, -1 for UNFRAMEABLE):
 *   Py_ssize_t otsec_<name>_frame(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
 * and the twin of its probe() (see cprobe_fn):
 *   int otsec_<name>_probe(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
 */
#ifndef OTSEC_CDECODE_H
#define OTSEC_CDECODE_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>

/* Remove a dict's oldest entry (insertion order): how the bounded per-connection tables
 * (pending requests) make room, as Python's ``del d[next(iter(d))]``. */
static inline int
otsec_drop_oldest(PyObject *dict)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    if (!PyDict_Next(dict, &pos, &key, &value))
        return 0;
    Py_INCREF(key);
    int rc = PyDict_DelItem(dict, key);
    Py_DECREF(key);
    return rc;
}

/* An int constant of a Python module (the twins read their limits where Python keeps
 * them): 0, or -1 with an exception. */
static inline int
otsec_module_long(PyObject *module, const char *name, long *out)
{
    PyObject *v = PyObject_GetAttrString(module, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* The list [event] a decode returns, taking over the reference to event; NULL and
 * NotImplemented pass through unchanged. */
static inline PyObject *
otsec_one_event(PyObject *event)
{
    if (event == NULL || event == Py_NotImplemented)
        return event;
    PyObject *list = PyList_New(1);
    if (list == NULL) {
        Py_DECREF(event);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, event);
    return list;
}

/* model.Event, Target and Flow made without their Python __init__ (otsec/_model.c): cls(*args),
 * the fields not given set to their defaults (blank: also None for the required ones). An
 * exact Event's field is the slot at otsec_event_offset[EV_...] (a borrowed reference;
 * NULL only after a del), a Flow's at otsec_flow_offset[FL_...]. otsec_event_field_index
 * (otsec_flow_field_index): EV_... (FL_...) of a field name, or -1. */
enum {
    EV_PROTOCOL, EV_KIND, EV_FUNCTION, EV_OP_CLASS, EV_FUNCTION_CODE, EV_TARGETS, EV_RESULT,
    EV_STATUS, EV_ANOMALIES, EV_DETAIL, EV_IDENTITY, EV_PAIR_KEY, EV_TS, EV_PACKET, EV_FLOW_ID,
    EV_SRC_IP, EV_SRC_PORT, EV_SRC_MAC, EV_DST_IP, EV_DST_PORT, EV_DST_MAC, EV_REQUEST_PACKET,
    EV_CAPTURE, EV_FIELDS
};
enum {
    FL_FLOW_ID, FL_TRANSPORT, FL_CLIENT_IP, FL_CLIENT_PORT, FL_SERVER_IP, FL_SERVER_PORT,
    FL_CLIENT_MAC, FL_SERVER_MAC, FL_INITIATOR_KNOWN, FL_APP, FL_DECODED, FL_FIRST_TS, FL_LAST_TS,
    FL_FIRST_PACKET, FL_LAST_PACKET, FL_PACKETS_C2S, FL_PACKETS_S2C, FL_BYTES_C2S, FL_BYTES_S2C,
    FL_EVENTS, FL_GAPS, FL_ANOMALIES, FL_CAPTURE, FL_FIELDS
};
extern PyTypeObject *otsec_Event, *otsec_Target, *otsec_Flow;
extern Py_ssize_t otsec_event_offset[EV_FIELDS], otsec_flow_offset[FL_FIELDS];
int otsec_model_init(void);
PyObject *otsec_event_new(PyObject *const *args, int nargs);
PyObject *otsec_event_blank(void);
PyObject *otsec_flow_blank(void);
PyObject *otsec_target_new(PyObject *const *args, int nargs);
int otsec_event_field_index(PyObject *name);
int otsec_flow_field_index(PyObject *name);

static inline PyObject **
otsec_event_field(PyObject *event, int field)
{
    return (PyObject **)((char *)event + otsec_event_offset[field]);
}

static inline PyObject **
otsec_flow_field(PyObject *flow, int field)
{
    return (PyObject **)((char *)flow + otsec_flow_offset[field]);
}

typedef PyObject *(*cdecode_fn)(PyObject *msg, int from_client, PyObject *state);
typedef Py_ssize_t (*cframe_fn)(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos);
/* probe(buf, pos) twins: 1 or 0 as the Python probe answers, or OTSEC_PROBE_UNSURE where
 * the twin does not decide (the Python probe then does). */
typedef int (*cprobe_fn)(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos);
#define OTSEC_PROBE_UNSURE (-1)

int otsec_modbus_init(void);
PyObject *otsec_modbus_decode(PyObject *msg, int from_client, PyObject *state);
Py_ssize_t otsec_modbus_frame(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos);
int otsec_modbus_probe(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos);
int otsec_s7comm_init(void);
PyObject *otsec_s7comm_decode(PyObject *msg, int from_client, PyObject *state);
Py_ssize_t otsec_s7comm_frame(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos);
int otsec_s7comm_probe(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos);
int otsec_opcua_init(void);
PyObject *otsec_opcua_decode(PyObject *msg, int from_client, PyObject *state);
Py_ssize_t otsec_opcua_frame(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos);
int otsec_opcua_probe(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos);

#endif
