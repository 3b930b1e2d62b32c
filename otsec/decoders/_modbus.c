/* The C twin of otsec/decoders/modbus.py decode() (see _cdecode.h for the contract). */
#include "_cdecode.h"

int
otsec_modbus_init(void)
{
    return 0;
}

PyObject *
otsec_modbus_decode(PyObject *msg, int from_client, PyObject *state)
{
    Py_RETURN_NOTIMPLEMENTED;
}
