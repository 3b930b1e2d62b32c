/* The compiled twin of otsec.detect.findings.Finding.tally (installed as Finding.tally).
 *
 * `otsec check` counts every repeat of a finding through Finding.tally: the checker's
 * memos decide once, per endpoint, connection direction and function, which finding a
 * message counts into, and then each message is one tally call (first/last occurrence,
 * count, evidence samples). On the benchmark that is 600,000 calls per million packets,
 * about a sixth of the command in Python. This does exactly what the Python method does,
 * on the Finding's slots (their offsets read from the class at bind time), and the Python
 * method stays the reference: tests/test_detect_findings_compiled.py compares the two on
 * random sequences of calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "../_slots.h"

/* The Finding slots tally writes. An occurrence's time, packet and capture are 2 apart
 * (occurrence() relies on it: F_FIRST_TS, F_FIRST_PACKET, F_FIRST_CAPTURE and the same
 * for the last). */
enum { F_COUNT, F_FIRST_TS, F_LAST_TS, F_FIRST_PACKET, F_LAST_PACKET, F_FIRST_CAPTURE,
       F_LAST_CAPTURE, F_SAMPLES, F_SAMPLES_DROPPED, F_SLOTS };
static const char *const slot_names[F_SLOTS] = {
    "count", "first_ts", "last_ts", "first_packet", "last_packet", "first_capture",
    "last_capture", "samples", "samples_dropped",
};
static Py_ssize_t offset[F_SLOTS];
static Py_ssize_t max_samples;
static PyObject *one, *empty;

#define SLOT(obj, i) (*(PyObject **)((char *)(obj) + offset[i]))

/* A slot's value (borrowed), or NULL with AttributeError when it was deleted. */
static PyObject *
get(PyObject *f, int i)
{
    PyObject *v = SLOT(f, i);
    if (v == NULL)
        PyErr_Format(PyExc_AttributeError, "Finding.%s was deleted", slot_names[i]);
    return v;
}

/* Store v (a new reference, or NULL: an error already set) in a slot. */
static int
put(PyObject *f, int i, PyObject *v)
{
    if (v == NULL)
        return -1;
    Py_XSETREF(SLOT(f, i), v);
    return 0;
}

/* where = (ts, packet, capture) into the first or the last occurrence's slots. */
static int
occurrence(PyObject *f, int ts_slot, PyObject *const *where)
{
    return put(f, ts_slot, Py_NewRef(where[0])) < 0 || put(f, ts_slot + 2, Py_NewRef(where[1])) < 0 ||
           put(f, ts_slot + 4, Py_NewRef(where[2])) < 0 ? -1 : 0;
}

/* 0 when d is a dict, else -1 with TypeError naming what it should have been. */
static int
must_be_dict(PyObject *d, const char *what)
{
    if (PyDict_Check(d))
        return 0;
    PyErr_Format(PyExc_TypeError, "%s must be a dict", what);
    return -1;
}

/* One field's evidence value into the samples, as Finding.tally does. 0, or -1. */
static int
sample(PyObject *f, PyObject *name, PyObject *value)
{
    if (value == Py_None)
        return 0;
    PyObject *text;
    if (PyUnicode_CheckExact(value)) {
        if (PyUnicode_GET_LENGTH(value) == 0)
            return 0;
        text = Py_NewRef(value);
    } else {
        int blank = PyObject_RichCompareBool(value, empty, Py_EQ);
        if (blank)
            return blank < 0 ? -1 : 0;
        if ((text = PyObject_Str(value)) == NULL)
            return -1;
    }
    int rc = -1;
    PyObject *buckets = get(f, F_SAMPLES), *bucket, *seen;
    if (buckets == NULL || must_be_dict(buckets, "Finding.samples") < 0)
        goto done;
    bucket = PyDict_GetItemWithError(buckets, name);
    if (bucket == NULL && PyErr_Occurred())
        goto done;
    if (bucket == NULL || bucket == Py_None) {
        PyObject *fresh = PyDict_New();
        int set = fresh == NULL ? -1 : PyDict_SetItem(buckets, name, fresh);
        Py_XDECREF(fresh);   /* buckets holds it */
        if (set < 0)
            goto done;
        bucket = fresh;
    }
    if (must_be_dict(bucket, "a Finding.samples bucket") < 0)
        goto done;
    seen = PyDict_GetItemWithError(bucket, text);
    if (seen == NULL && PyErr_Occurred())
        goto done;
    if (seen != NULL && seen != Py_None) {
        PyObject *more = PyNumber_Add(seen, one);
        rc = more == NULL ? -1 : PyDict_SetItem(bucket, text, more);
        Py_XDECREF(more);
    } else if (PyDict_GET_SIZE(bucket) < max_samples) {
        rc = PyDict_SetItem(bucket, text, one);
    } else {
        PyObject *dropped = get(f, F_SAMPLES_DROPPED);
        rc = dropped == NULL ? -1 : put(f, F_SAMPLES_DROPPED, PyNumber_Add(dropped, one));
    }
done:
    Py_DECREF(text);
    return rc;
}

/* tally(self, ts, packet, capture, names, values, count=1) */
static PyObject *
tally(PyObject *f, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *count = one;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw < 5 || nargs + nkw > 6 || nargs < 5 ||
        (nkw && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "count") != 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "tally(ts, packet, capture, names, values, count=1): wrong arguments");
        return NULL;
    }
    if (nargs + nkw == 6)
        count = args[5];
    PyObject *had = get(f, F_COUNT);
    int counted = had == NULL ? -1 : PyObject_IsTrue(had);
    if (counted < 0)
        return NULL;
    if (!counted) {
        if (occurrence(f, F_FIRST_TS, args) < 0 || occurrence(f, F_LAST_TS, args) < 0)
            return NULL;
    } else {
        PyObject *last = get(f, F_LAST_TS), *first;
        int later = last == NULL ? -1 : PyObject_RichCompareBool(args[0], last, Py_GE);
        if (later < 0)
            return NULL;
        if (later) {
            if (occurrence(f, F_LAST_TS, args) < 0)
                return NULL;
        } else {
            first = get(f, F_FIRST_TS);
            int earlier = first == NULL ? -1 : PyObject_RichCompareBool(args[0], first, Py_LT);
            if (earlier < 0 || (earlier && occurrence(f, F_FIRST_TS, args) < 0))
                return NULL;
        }
    }
    if (put(f, F_COUNT, PyNumber_Add(had, count)) < 0)
        return NULL;
    PyObject *names = args[3], *values = args[4];
    if (PyTuple_CheckExact(names) && PyTuple_CheckExact(values)) {
        Py_ssize_t n = PyTuple_GET_SIZE(names) < PyTuple_GET_SIZE(values) ? PyTuple_GET_SIZE(names)
                                                                           : PyTuple_GET_SIZE(values);
        for (Py_ssize_t i = 0; i < n; i++)
            if (sample(f, PyTuple_GET_ITEM(names, i), PyTuple_GET_ITEM(values, i)) < 0)
                return NULL;
        Py_RETURN_NONE;
    }
    /* any iterables, as zip() pairs them */
    PyObject *ni = PyObject_GetIter(names), *vi = ni ? PyObject_GetIter(values) : NULL;
    int rc = vi == NULL ? -1 : 0;
    while (rc == 0) {
        PyObject *name = PyIter_Next(ni);
        PyObject *value = name ? PyIter_Next(vi) : NULL;
        if (value == NULL) {
            Py_XDECREF(name);
            rc = PyErr_Occurred() ? -1 : 1;
            break;
        }
        rc = sample(f, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
    }
    Py_XDECREF(ni);
    Py_XDECREF(vi);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef tally_def = {
    "tally", (PyCFunction)(void (*)(void))tally, METH_FASTCALL | METH_KEYWORDS,
    "The compiled Finding.tally (otsec/detect/_findings.c): see Finding._tally_python.",
};

/* bind(Finding, max_samples) -> the method descriptor to install as Finding.tally */
static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bind(Finding, max_samples)");
        return NULL;
    }
    max_samples = PyLong_AsSsize_t(args[1]);
    if (max_samples == -1 && PyErr_Occurred())
        return NULL;
    PyTypeObject *type = (PyTypeObject *)args[0];
    for (int i = 0; i < F_SLOTS; i++) {
        if ((offset[i] = otsec_slot_offset(PyDict_GetItemString(type->tp_dict, slot_names[i]))) < 0) {
            PyErr_Format(PyExc_TypeError, "Finding.%s is not the slot the compiled tally expects",
                         slot_names[i]);
            return NULL;
        }
    }
    return PyDescr_NewMethod(type, &tally_def);
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(Finding, max_samples): Finding.tally compiled, as a method descriptor to install"},
    {NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "otsec.detect._findings", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__findings(void)
{
    if ((one = PyLong_FromLong(1)) == NULL || (empty = PyUnicode_FromString("")) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
