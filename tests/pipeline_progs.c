#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __s32);
} deltas SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("xdp")
int adjust(struct xdp_md *ctx)
{
	__u32 k0 = 0, k1 = 1, k2 = 2;
	__s32 *m = bpf_map_lookup_elem(&deltas, &k0);
	__s32 *h = bpf_map_lookup_elem(&deltas, &k1);
	__s32 *t = bpf_map_lookup_elem(&deltas, &k2);

	if (!m || !h || !t)
		return XDP_ABORTED;
	if (*m && bpf_xdp_adjust_meta(ctx, *m))
		return XDP_DROP;
	if (*h && bpf_xdp_adjust_head(ctx, *h))
		return XDP_DROP;
	if (*t && bpf_xdp_adjust_tail(ctx, *t))
		return XDP_DROP;
	return XDP_PASS;
}

SEC("xdp")
int fib(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct bpf_fib_lookup p = {};
	int rc;

	if ((void *)(ip + 1) > data_end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
		return XDP_PASS;
	p.family = 2;
	p.ipv4_src = ip->saddr;
	p.ipv4_dst = ip->daddr;
	p.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	if (rc == 0) {
		__builtin_memcpy(eth->h_dest, p.dmac, 6);
		__builtin_memcpy(eth->h_source, p.smac, 6);
		return bpf_redirect(p.ifindex, 0);
	}
	bpf_printk("fib %d", rc);
	return XDP_PASS;
}

struct rec {
	__u64 now;
	__u32 len;
	__u32 pad;
};

SEC("xdp")
int clock(struct xdp_md *ctx)
{
	struct rec r = { .now = bpf_ktime_get_ns(), .len = ctx->data_end - ctx->data };

	bpf_ringbuf_output(&events, &r, sizeof(r), 0);
	if (r.len > 200)
		return 7; /* not an XDP action */
#ifndef KERNEL_SAFE /* the verifier refuses this: built only for xdpsim's own engines */
	if (r.len > 100)
		return *(volatile __u8 *)(long)(ctx->data + 4000); /* faults: past the frame */
#endif
	return XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* odd lengths to CPU 1 through the cpumap, even ones to the AF_XDP socket of their rx queue; an
 * empty slot drops (the flags' action) */
SEC("xdp")
int steer(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;

	if (len & 1)
		return bpf_redirect_map(&cpus, 1, XDP_DROP);
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
}

/* multi-buffer: frames over 3520 bytes arrive with fragments; they go back out (TX), others pass */
SEC("xdp.frags")
int frags(struct xdp_md *ctx)
{
	return bpf_xdp_get_buff_len(ctx) > 3520 ? XDP_TX : XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} ports SEC(".maps");

SEC("xdp")
int to_port(struct xdp_md *ctx)
{
	return bpf_redirect_map(&ports, 0, XDP_ABORTED);
}

/* the devmap entry's program: runs at the egress device; marks frames, drops odd lengths */
SEC("xdp/devmap")
int egress_mark(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *first = data;

	if ((void *)(first + 1) > data_end || (data_end - data) & 1)
		return XDP_DROP;
	*first = (__u8)ctx->egress_ifindex;
	return XDP_PASS;
}
