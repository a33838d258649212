"""The running Linux kernel as a reference: the bpf() syscall (ctypes, no libbpf) and network namespaces.

`bpf` wraps the commands the kernel engine needs; `netns` makes throwaway namespaces with devices of
chosen ifindex and queue count, so that BPF_PROG_TEST_RUN can resolve `ingress_ifindex`.
"""

from __future__ import annotations

from .bpf import kernel_available, possible_cpus, require_kernel

__all__ = ["kernel_available", "possible_cpus", "require_kernel"]
