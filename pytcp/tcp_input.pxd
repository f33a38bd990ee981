# Aliased: the .py imports the Python name for its annotations.
from tcpcore._wire_c cimport TCPSegment as CSegment

from pytcp.receiver cimport Receiver
from pytcp.tcp_output cimport OutputMixin

cdef class InputMixin(OutputMixin):
    pass
    cpdef handle_segment(self, CSegment seg, double now)
    cpdef _handshake_rtt(self, CSegment seg, double now)
    cpdef _input(self, CSegment seg, double now, state)
    cpdef _predicted(self, CSegment seg, state, flags, seq, n, Receiver rcv)
    cpdef _input_checks(self, CSegment seg, double now, state, flags, seq, n, Receiver rcv)
    cpdef _syn_acked(self, CSegment seg, wnd, double now)
    cpdef _input_ack(self, CSegment seg, double now)
    cpdef _input_text(self, CSegment seg, seq, fin_acked_now, double now)
    cpdef _ts_sample(self, ts_ecr, double now, rtx_at)
    cpdef _rtt_sample(self, double rtt)
