"""xdpsim: run real eBPF XDP and TC programs outside the kernel."""

__version__ = "0.1.0"
