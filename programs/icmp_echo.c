/*
 * icmp_echo.c: answers IPv4 ICMP echo requests (ping) with echo replies via XDP_TX.
 *
 * Uses the legacy section name "xdp_icmp_echo" (iproute2/old samples style): loaders treat
 * `xdp_*` sections as XDP and xdpsim says so in a notice. The reply swaps MAC and IP addresses,
 * turns type 8 into type 0 and fixes the ICMP checksum incrementally (RFC 1624). Everything
 * else passes; a truncated ICMP header is dropped.
 */
#include "common.h"
#include <linux/icmp.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp_icmp_echo")
int icmp_echo(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	struct icmphdr *icmp;
	__u8 mac[ETH_ALEN];
	__u32 addr, sum;

	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || iph->protocol != IPPROTO_ICMP || iph->ihl != 5)
		return XDP_PASS;
	icmp = (void *)(iph + 1);
	if ((void *)(icmp + 1) > data_end)
		return XDP_DROP;
	if (icmp->type != ICMP_ECHO || icmp->code != 0)
		return XDP_PASS;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	addr = iph->saddr;
	iph->saddr = iph->daddr;
	iph->daddr = addr;
	iph->ttl = 64;
	/* ttl changed: recompute the IPv4 header checksum from scratch (20 bytes, no options) */
	iph->check = 0;
	sum = 0;
	for (int i = 0; i < 10; i++)
		sum += ((__u16 *)iph)[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	iph->check = ~sum;

	/* type 8 -> 0: the first 16-bit word drops by 0x0800 (network order), so the checksum
	 * (one's complement) grows by it: HC' = ~(~HC + ~m + m') (RFC 1624). */
	icmp->type = ICMP_ECHOREPLY;
	sum = (__u16)~icmp->checksum;
	sum += (__u16)~bpf_htons(ICMP_ECHO << 8);
	sum += bpf_htons(ICMP_ECHOREPLY << 8);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	icmp->checksum = ~sum;
	return XDP_TX;
}
