/*
 * rewrite.c: programs that change the frame (XDP).
 *
 * - `swap_tx`: IPv4 "reflector": swaps MAC and IP addresses, decrements the TTL (checksum fixed
 *   with bpf_csum_diff) and sends the frame back out with XDP_TX. Non-IPv4 passes.
 * - `encap_ipip`: bpf_xdp_adjust_head(-20) makes room for an outer IPv4 header (IPIP, proto 4,
 *   10.0.0.1 -> 10.0.0.2, checksum from bpf_csum_diff) before the original IPv4 packet; XDP_TX.
 * - `decap_ipip`: removes that outer header again (bpf_xdp_adjust_head(+20)); XDP_PASS.
 * - `trim_tail`: bpf_xdp_adjust_tail cuts frames longer than 128 bytes down to 128; pads
 *   frames shorter than 64 bytes up to 64 (new bytes are zero); XDP_PASS.
 * - `add_meta`: bpf_xdp_adjust_meta(-8) puts an 8-byte metadata record (magic, frame length)
 *   before the packet; XDP_PASS (XDP_ABORTED when metadata is not supported).
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline __u16 csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

static __always_inline void swap_mac(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

SEC("xdp")
int swap_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	__u32 old_word, new_word, addr;
	__s64 csum;

	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (iph->ttl <= 1)
		return XDP_DROP;

	swap_mac(eth);
	addr = iph->saddr;
	iph->saddr = iph->daddr;
	iph->daddr = addr;

	/* the checksum is over 16-bit words: diff the word holding ttl and protocol (the 32-bit
	 * load also covers the checksum field, masked out). */
	old_word = *(__u32 *)&iph->ttl & bpf_htonl(0xffff0000);
	iph->ttl--;
	new_word = *(__u32 *)&iph->ttl & bpf_htonl(0xffff0000);
	csum = bpf_csum_diff(&old_word, 4, &new_word, 4, ~((__u32)iph->check) & 0xffff);
	if (csum < 0)
		return XDP_ABORTED;
	iph->check = csum_fold((__u32)csum);
	return XDP_TX;
}

SEC("xdp")
int encap_ipip(struct xdp_md *ctx)
{
	struct ethhdr eth_copy;
	struct ethhdr *eth;
	struct iphdr *inner, *outer;
	void *data, *data_end;
	__s64 csum;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	inner = data + sizeof(*eth);
	if ((void *)(inner + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	__builtin_memcpy(&eth_copy, eth, sizeof(eth_copy));
	__u16 inner_len = bpf_ntohs(inner->tot_len);

	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return XDP_DROP;

	/* every packet pointer is invalid after adjust_head: load them again */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	outer = data + sizeof(*eth);
	if ((void *)(outer + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth, &eth_copy, sizeof(*eth));

	outer->version = 4;
	outer->ihl = 5;
	outer->tos = 0;
	outer->tot_len = bpf_htons(inner_len + sizeof(*outer));
	outer->id = 0;
	outer->frag_off = bpf_htons(0x4000); /* DF */
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = bpf_htonl(0x0a000001);
	outer->daddr = bpf_htonl(0x0a000002);
	csum = bpf_csum_diff(0, 0, (__be32 *)outer, sizeof(*outer), 0);
	if (csum < 0)
		return XDP_ABORTED;
	outer->check = csum_fold((__u32)csum);
	return XDP_TX;
}

SEC("xdp")
int decap_ipip(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *outer = data + sizeof(*eth);
	struct ethhdr eth_copy;

	if ((void *)(outer + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || outer->protocol != IPPROTO_IPIP || outer->ihl != 5)
		return XDP_PASS;
	__builtin_memcpy(&eth_copy, eth, sizeof(eth_copy));
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct iphdr)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth, &eth_copy, sizeof(*eth));
	return XDP_PASS;
}

SEC("xdp")
int trim_tail(struct xdp_md *ctx)
{
	int len = ctx->data_end - ctx->data;

	if (len > 128) {
		if (bpf_xdp_adjust_tail(ctx, 128 - len))
			return XDP_DROP;
	} else if (len < 64) {
		if (bpf_xdp_adjust_tail(ctx, 64 - len))
			return XDP_DROP;
	}
	return XDP_PASS;
}

struct meta_rec {
	__u32 magic;
	__u32 len;
};

SEC("xdp")
int add_meta(struct xdp_md *ctx)
{
	struct meta_rec *meta;
	void *data;
	__u32 len = ctx->data_end - ctx->data;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > data)
		return XDP_ABORTED;
	meta->magic = 0x4d455441; /* "META" */
	meta->len = len;
	return XDP_PASS;
}
