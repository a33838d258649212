/*
 * tc_encap.c: IP-in-IP encapsulation and decapsulation with bpf_skb_adjust_room.
 *
 * tc_encap: IPv4 packets get an outer IPv4 header (192.0.2.1 -> 192.0.2.2, protocol 4), IPv6
 * packets an outer IPv6 header (2001:db8::1 -> 2001:db8::2, next header 41): room made after the
 * MAC header (BPF_ADJ_ROOM_MAC) with the ENCAP_L3 flags, the header written with
 * bpf_skb_store_bytes, the IPv4 header checksum from bpf_csum_diff.
 * tc_decap: removes an outer IPv4 (protocol 4 or 41) or IPv6 (next header 41 or 4) header with
 * the DECAP_L3 flags and fixes the ethertype when the inner family differs.
 * `encap_stats` counts [0] encapsulated, [1] decapsulated, [2] adjust_room failures.
 */
#include "common.h"
#include <linux/pkt_cls.h>

char LICENSE[] SEC("license") = "GPL";

/* BPF_F_ADJ_ROOM_DECAP_L3_IPV4/6 (Linux 6.3); older uapi headers lack them. */
#define DECAP_L3_IPV4 (1ULL << 7)
#define DECAP_L3_IPV6 (1ULL << 8)

#ifndef IPPROTO_IPIP
#define IPPROTO_IPIP 4
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} encap_stats SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&encap_stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tc")
int tc_encap(struct __sk_buff *skb)
{
	const int l3 = sizeof(struct ethhdr);

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr inner, outer = {};
		__s64 sum;

		if (bpf_skb_load_bytes(skb, l3, &inner, sizeof(inner)) < 0)
			return TC_ACT_OK;
		if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) < 0) {
			bump(2);
			return TC_ACT_OK;
		}
		outer.version = 4;
		outer.ihl = 5;
		outer.tos = inner.tos;
		outer.tot_len = bpf_htons(bpf_ntohs(inner.tot_len) + sizeof(outer));
		outer.ttl = 64;
		outer.protocol = IPPROTO_IPIP;
		outer.saddr = bpf_htonl(0xC0000201);
		outer.daddr = bpf_htonl(0xC0000202);
		sum = bpf_csum_diff(0, 0, (__be32 *)&outer, sizeof(outer), 0);
		outer.check = ~sum & 0xffff;
		if (bpf_skb_store_bytes(skb, l3, &outer, sizeof(outer), 0) < 0)
			return TC_ACT_SHOT;
		bump(0);
		return TC_ACT_OK;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr inner, outer = {};

		if (bpf_skb_load_bytes(skb, l3, &inner, sizeof(inner)) < 0)
			return TC_ACT_OK;
		if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6) < 0) {
			bump(2);
			return TC_ACT_OK;
		}
		outer.version = 6;
		outer.payload_len = bpf_htons(bpf_ntohs(inner.payload_len) + sizeof(inner));
		outer.nexthdr = 41;
		outer.hop_limit = 64;
		outer.saddr.in6_u.u6_addr8[0] = 0x20;
		outer.saddr.in6_u.u6_addr8[1] = 0x01;
		outer.saddr.in6_u.u6_addr8[2] = 0x0d;
		outer.saddr.in6_u.u6_addr8[3] = 0xb8;
		outer.daddr = outer.saddr;
		outer.saddr.in6_u.u6_addr8[15] = 1;
		outer.daddr.in6_u.u6_addr8[15] = 2;
		if (bpf_skb_store_bytes(skb, l3, &outer, sizeof(outer), 0) < 0)
			return TC_ACT_SHOT;
		bump(0);
	}
	return TC_ACT_OK;
}

SEC("tc")
int tc_decap(struct __sk_buff *skb)
{
	const int l3 = sizeof(struct ethhdr);
	__u64 flags = 0;
	__be16 inner_proto = 0;
	int len = 0;
	__u8 next;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, l3 + 9, &next, 1) < 0)
			return TC_ACT_OK;
		len = sizeof(struct iphdr);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, l3 + 6, &next, 1) < 0)
			return TC_ACT_OK;
		len = sizeof(struct ipv6hdr);
	} else {
		return TC_ACT_OK;
	}
	if (next == IPPROTO_IPIP) {
		flags = DECAP_L3_IPV4;
		inner_proto = bpf_htons(ETH_P_IP);
	} else if (next == 41) {
		flags = DECAP_L3_IPV6;
		inner_proto = bpf_htons(ETH_P_IPV6);
	} else {
		return TC_ACT_OK;
	}
	if (bpf_skb_adjust_room(skb, -len, BPF_ADJ_ROOM_MAC, flags) < 0) {
		bump(2);
		return TC_ACT_OK;
	}
	if (bpf_skb_store_bytes(skb, 12, &inner_proto, sizeof(inner_proto), 0) < 0)
		return TC_ACT_SHOT;
	bump(1);
	return TC_ACT_OK;
}
