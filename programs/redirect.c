/*
 * redirect.c: XDP redirects.
 *
 * - `redirect_map`: bpf_redirect_map through the devmap `tx_ports`, keyed by the receiving
 *   queue (rx_queue_index); an empty slot falls back to XDP_PASS (the flags argument's low bits
 *   give the action when the lookup fails).
 * - `redirect_ifindex`: bpf_redirect to the ifindex in the `.rodata` config `out_ifindex`
 *   (default 2), counting redirects in `.bss`.
 * - `devmap_prog`: a program for a devmap entry (SEC("xdp/devmap")): it runs after the redirect
 *   on the egress device and may rewrite or drop; it drops frames whose first byte is 0xff.
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

const volatile __u32 out_ifindex = 2;
__u64 redirects;

SEC("xdp")
int redirect_map(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_ports, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int redirect_ifindex(struct xdp_md *ctx)
{
	__sync_fetch_and_add(&redirects, 1);
	return bpf_redirect(out_ifindex, 0);
}

SEC("xdp/devmap")
int devmap_prog(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *first = data;

	if ((void *)(first + 1) > data_end)
		return XDP_DROP;
	return *first == 0xff ? XDP_DROP : XDP_PASS;
}
