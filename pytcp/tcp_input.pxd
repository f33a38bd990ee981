from pytcp.receiver cimport Receiver
from pytcp.tcp_output cimport OutputMixin

cdef class InputMixin(OutputMixin):
    pass
    cpdef handle_segment(self, seg, double now)
    cpdef _input(self, seg, double now, state)
    cpdef _predicted(self, seg, state, flags, seq, n, Receiver rcv)
    cpdef _input_checks(self, seg, double now, state, flags, seq, n, Receiver rcv)
    cpdef _input_ack(self, seg, double now)
    cpdef _input_text(self, seg, seq, fin_acked_now, double now)
    cpdef _ts_sample(self, ts_ecr, double now, rtx_at)
    cpdef _rtt_sample(self, double rtt)
