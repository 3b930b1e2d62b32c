/* Where a __slots__ field lives in its objects, for the extensions that read and write
 * model and finding slots directly (otsec/_model.c, otsec/detect/_findings.c). */
#ifndef OTSEC_SLOTS_H
#define OTSEC_SLOTS_H
#include <Python.h>
#include <structmember.h>

/* The offset of the object slot a class attribute describes, or -1 (no error set) when
 * descr is not such a slot (missing, a property, a typed member...). */
static inline Py_ssize_t
otsec_slot_offset(PyObject *descr)
{
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX)
        return -1;
    return ((PyMemberDescrObject *)descr)->d_member->offset;
}

#endif
