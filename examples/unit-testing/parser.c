// SPDX-License-Identifier: GPL-2.0
/*
 * flow_parser: a small XDP parser, the worked example of xdpsim's "Unit-testing parsers with pytest".
 *
 * Parses Ethernet, IPv4 (with options) and the TCP/UDP ports; drops malformed frames, TCP to port 23
 * (telnet) and UDP to port 19 (chargen); passes everything else (IPv6, ARP, ICMP, other ports).
 * Counts its verdicts in the array map `stats` (index: enum stat).
 *
 * `make broken` builds parser_broken.o with -DBROKEN: the telnet check then looks at port 22, the
 * kind of slip the tests in test_parser.py are there to catch.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifdef BROKEN
#define TELNET_PORT 22 /* the slip */
#else
#define TELNET_PORT 23
#endif
#define CHARGEN_PORT 19

char LICENSE[] SEC("license") = "GPL";

enum stat { STAT_PASS, STAT_MALFORMED, STAT_BLOCKED, STAT_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline int verdict(__u32 stat, int action)
{
	__u64 *count = bpf_map_lookup_elem(&stats, &stat);

	if (count)
		__sync_fetch_and_add(count, 1);
	return action;
}

SEC("xdp")
int flow_parser(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return verdict(STAT_MALFORMED, XDP_DROP);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return verdict(STAT_PASS, XDP_PASS); /* IPv6, ARP, ...: not ours */

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl < 5)
		return verdict(STAT_MALFORMED, XDP_DROP);
	l4 = (void *)ip + ip->ihl * 4;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return verdict(STAT_MALFORMED, XDP_DROP);
		if (tcp->dest == bpf_htons(TELNET_PORT))
			return verdict(STAT_BLOCKED, XDP_DROP);
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return verdict(STAT_MALFORMED, XDP_DROP);
		if (udp->dest == bpf_htons(CHARGEN_PORT))
			return verdict(STAT_BLOCKED, XDP_DROP);
	}
	return verdict(STAT_PASS, XDP_PASS);
}
