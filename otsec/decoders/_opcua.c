/* The C twin of otsec/decoders/opcua.py decode() (see _cdecode.h for the contract). */
#include "_cdecode.h"

int
otsec_opcua_init(void)
{
    return 0;
}

PyObject *
otsec_opcua_decode(PyObject *msg, int from_client, PyObject *state)
{
    Py_RETURN_NOTIMPLEMENTED;
}
