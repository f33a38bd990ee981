"""pytcp: a user-space TCP/IP stack on Linux TUN devices, built on the compiled tcpcore."""

__version__ = "0.1.0"
