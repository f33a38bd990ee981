from pytcp.tcp_input cimport InputMixin

cdef class Connection(InputMixin):
    pass
