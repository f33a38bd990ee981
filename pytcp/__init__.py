"""pytcp: a user-space TCP/IP stack on Linux TUN devices, built on the compiled tcpcore."""

from . import _compiled

_compiled.install()  # before any engine module is imported

__version__ = "0.1.0"
