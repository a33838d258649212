/*
 * broadcast.c: XDP broadcast through a devmap (bpf_redirect_map with BPF_F_BROADCAST).
 *
 * The kernel sends a copy of the frame out of every device in the map (kernel/bpf/devmap.c,
 * dev_map_enqueue_multi), each copy through its own entry's devmap program; with
 * BPF_F_EXCLUDE_INGRESS the device the frame came in on gets none. The key is not looked up.
 *
 * - `flood`: every port of the devmap `ports`, the ingress port included.
 * - `flood_others`: every port of `ports` but the ingress one (BPF_F_EXCLUDE_INGRESS).
 * - `flood_hash`: every port of the devmap_hash `hports` but the ingress one.
 * - `split_horizon` (xdp/devmap): a devmap entry program that drops the copy going back out of the
 *   port it came in on (what BPF_F_EXCLUDE_INGRESS does, decided per copy) and marks the others
 *   with their egress ifindex in the last byte of the source MAC address.
 * - `rx_count`: counts IPv4 frames per receiving ifindex in `rx_seen` (index ifindex % 8) and keeps
 *   the last one's first 16 bytes in `rx_head`, then drops every frame: the far end of a broadcast in
 *   tests (IPv4 only: a veth also carries the kernel's own IPv6 neighbour discovery).
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} hports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} rx_seen SEC(".maps");

struct head16 {
	__u8 bytes[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct head16);
} rx_head SEC(".maps");

SEC("xdp")
int flood(struct xdp_md *ctx)
{
	return bpf_redirect_map(&ports, 0, BPF_F_BROADCAST);
}

SEC("xdp")
int flood_others(struct xdp_md *ctx)
{
	return bpf_redirect_map(&ports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

SEC("xdp")
int flood_hash(struct xdp_md *ctx)
{
	return bpf_redirect_map(&hports, 0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

SEC("xdp/devmap")
int split_horizon(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if (ctx->egress_ifindex == ctx->ingress_ifindex)
		return XDP_DROP;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	eth->h_source[5] = (__u8)ctx->egress_ifindex;
	return XDP_PASS;
}

SEC("xdp")
int rx_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 key = ctx->ingress_ifindex % 8;
	__u64 *n;
	struct head16 *h;

	if (data + sizeof(struct head16) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_DROP;
	n = bpf_map_lookup_elem(&rx_seen, &key);
	h = bpf_map_lookup_elem(&rx_head, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	if (h)
		__builtin_memcpy(h, data, sizeof(*h));
	return XDP_DROP;
}
