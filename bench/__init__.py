"""Benchmarks: what users feel, against plain QEMU in the same run (see README.md)."""
