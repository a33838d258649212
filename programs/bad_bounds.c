/*
 * bad_bounds.c: a program the kernel verifier refuses (for `xdpsim check` and its tests).
 *
 * It checks that the Ethernet header (14 bytes) is inside the packet and then reads the byte
 * right after it, offset 14, one byte past its own bounds check: "invalid access to packet".
 * xdpsim runs it anyway and faults on short frames with an out-of-bounds read.
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int bad_bounds(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 *next = data + sizeof(*eth);

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	/* BUG: the check above covers bytes 0..13 only */
	if (*next == 0x45)
		return XDP_PASS;
	return XDP_DROP;
}
