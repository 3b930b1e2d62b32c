/* model.py's Event, Target and Flow made and filled from C, without their dataclass __init__.
 *
 * Making an event through the class runs the generated __init__, a Python frame that
 * assigns 23 fields one by one (about 0.3 us: the largest single cost of an event made by
 * a compiled decoder), and the flow layer then sets its context fields through the
 * generic attribute protocol. Here an object is allocated by its type and its slots are
 * written directly, which is what __init__ and setattr end up doing.
 *
 * The layout is read from the classes at import: every field's slot (its member
 * descriptor's offset) and its default or default factory, in dataclass order, so
 * model.py stays the one place that declares them. The field order is checked against
 * the names below; a change in model.py fails the import instead of misplacing a value.
 */
#include "_cdecode.h"

#include "_slots.h"

#define MAX_FIELDS 32

typedef struct {
    PyTypeObject *type;
    int count;
    Py_ssize_t offset[MAX_FIELDS];
    PyObject *fallback[MAX_FIELDS];   /* the default, or the default factory */
    enum { DEFAULT, FACTORY, REQUIRED } source[MAX_FIELDS];   /* of a field not passed */
} Layout;

static Layout event_layout, target_layout, flow_layout;
PyTypeObject *otsec_Event, *otsec_Target, *otsec_Flow;
Py_ssize_t otsec_event_offset[EV_FIELDS], otsec_flow_offset[FL_FIELDS];

static const char *const event_names[EV_FIELDS] = {
    "protocol", "kind", "function", "op_class", "function_code", "targets", "result", "status",
    "anomalies", "detail", "identity", "pair_key", "ts", "packet", "flow_id", "src_ip",
    "src_port", "src_mac", "dst_ip", "dst_port", "dst_mac", "request_packet", "capture",
};
static const char *const target_names[] = {"kind", "start", "count", "area", "db", "name"};
static const char *const flow_names[FL_FIELDS] = {
    "flow_id", "transport", "client_ip", "client_port", "server_ip", "server_port", "client_mac",
    "server_mac", "initiator_known", "app", "decoded", "first_ts", "last_ts", "first_packet",
    "last_packet", "packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c", "events", "gaps",
    "anomalies", "capture",
};

/* The layout of a slots dataclass whose fields are exactly ``names``, in order. */
static int
layout_load(Layout *lay, PyObject *model, const char *cls_name, const char *const *names, int count)
{
    PyObject *dataclasses = PyImport_ImportModule("dataclasses");
    PyObject *cls = dataclasses ? PyObject_GetAttrString(model, cls_name) : NULL;
    PyObject *missing = cls ? PyObject_GetAttrString(dataclasses, "MISSING") : NULL;
    PyObject *fields = missing ? PyObject_GetAttrString(cls, "__dataclass_fields__") : NULL;
    int rc = -1;
    if (fields == NULL)
        goto done;
    if (!PyType_Check(cls) || !PyDict_Check(fields) || PyDict_GET_SIZE(fields) != count ||
        count > MAX_FIELDS) {
        PyErr_Format(PyExc_ImportError, "otsec.model.%s: not the %d fields the compiled layer "
                     "knows", cls_name, count);
        goto done;
    }
    lay->type = (PyTypeObject *)cls;
    lay->count = count;
    Py_ssize_t pos = 0;
    PyObject *name, *field;
    for (int i = 0; PyDict_Next(fields, &pos, &name, &field); i++) {
        PyObject *descr = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, names[i]) == 0
                          ? PyDict_GetItemWithError(lay->type->tp_dict, name) : NULL;
        if ((lay->offset[i] = otsec_slot_offset(descr)) < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ImportError, "otsec.model.%s: field %d is not the slot '%s' "
                             "the compiled layer expects", cls_name, i, names[i]);
            goto done;
        }
        PyObject *dflt = PyObject_GetAttrString(field, "default");
        PyObject *factory = dflt ? PyObject_GetAttrString(field, "default_factory") : NULL;
        if (factory == NULL) {
            Py_XDECREF(dflt);
            goto done;
        }
        lay->source[i] = dflt != missing ? DEFAULT : factory != missing ? FACTORY : REQUIRED;
        lay->fallback[i] = Py_NewRef(lay->source[i] == FACTORY ? factory : dflt);
        Py_DECREF(dflt);
        Py_DECREF(factory);
    }
    Py_INCREF(cls);
    rc = 0;
done:
    Py_XDECREF(fields);
    Py_XDECREF(missing);
    Py_XDECREF(cls);
    Py_XDECREF(dataclasses);
    return rc;
}

/* cls(*args) for a layout: the fields given positionally, the rest their defaults; with
 * blank, a required field not given is None (the caller fills it) instead of an error. */
static PyObject *
layout_new(const Layout *lay, PyObject *const *args, int nargs, int blank)
{
    PyObject *obj = lay->type->tp_alloc(lay->type, 0);
    if (obj == NULL)
        return NULL;
    for (int i = 0; i < lay->count; i++) {
        PyObject *v = NULL;
        if (i < nargs)
            v = Py_NewRef(args[i]);
        else if (lay->source[i] == DEFAULT)
            v = Py_NewRef(lay->fallback[i]);
        else if (lay->source[i] == FACTORY)
            v = PyObject_CallNoArgs(lay->fallback[i]);
        else if (blank)
            v = Py_NewRef(Py_None);
        else
            PyErr_Format(PyExc_TypeError, "%s() missing a required field", lay->type->tp_name);
        if (v == NULL) {
            Py_DECREF(obj);
            return NULL;
        }
        *(PyObject **)((char *)obj + lay->offset[i]) = v;
    }
    return obj;
}

PyObject *
otsec_event_new(PyObject *const *args, int nargs)
{
    return layout_new(&event_layout, args, nargs, 0);
}

PyObject *
otsec_event_blank(void)
{
    return layout_new(&event_layout, NULL, 0, 1);
}

PyObject *
otsec_flow_blank(void)
{
    return layout_new(&flow_layout, NULL, 0, 1);
}

PyObject *
otsec_target_new(PyObject *const *args, int nargs)
{
    return layout_new(&target_layout, args, nargs, 0);
}

static int
field_index(PyObject *name, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, names[i]) == 0)
            return i;
    return -1;
}

int
otsec_event_field_index(PyObject *name)
{
    return field_index(name, event_names, EV_FIELDS);
}

int
otsec_flow_field_index(PyObject *name)
{
    return field_index(name, flow_names, FL_FIELDS);
}

int
otsec_model_init(void)
{
    PyObject *model = PyImport_ImportModule("otsec.model");
    if (model == NULL)
        return -1;
    int rc = layout_load(&event_layout, model, "Event", event_names, EV_FIELDS) < 0 ||
             layout_load(&target_layout, model, "Target", target_names, 6) < 0 ||
             layout_load(&flow_layout, model, "Flow", flow_names, FL_FIELDS) < 0 ? -1 : 0;
    Py_DECREF(model);
    if (rc == 0) {
        otsec_Event = event_layout.type;
        otsec_Target = target_layout.type;
        otsec_Flow = flow_layout.type;
        memcpy(otsec_event_offset, event_layout.offset, sizeof otsec_event_offset);
        memcpy(otsec_flow_offset, flow_layout.offset, sizeof otsec_flow_offset);
    }
    return rc;
}
