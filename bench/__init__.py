"""Benchmarks: micro benchmarks of tcpcore (pytest-benchmark) and side-by-side runs against the kernel."""
