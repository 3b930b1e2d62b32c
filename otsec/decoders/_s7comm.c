/* The C twin of otsec/decoders/s7comm.py decode() (see _cdecode.h for the contract). */
#include "_cdecode.h"

int
otsec_s7comm_init(void)
{
    return 0;
}

PyObject *
otsec_s7comm_decode(PyObject *msg, int from_client, PyObject *state)
{
    Py_RETURN_NOTIMPLEMENTED;
}
