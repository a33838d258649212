/*
 * tc_nat.c: source NAT on TC with the kernel's incremental checksum helpers.
 *
 * Every IPv4 packet gets source address 192.0.2.1 (bpf_skb_store_bytes + bpf_l3_csum_replace); the
 * first fragment of a TCP or UDP datagram also gets its source port flipped in the top bit, with
 * bpf_l4_csum_replace fixing the L4 checksum for the pseudo-header address (BPF_F_PSEUDO_HDR) and
 * the port. UDP datagrams without a checksum keep none (BPF_F_MARK_MANGLED_0). The original
 * (address, port, protocol) of each flow goes into `nat_sessions`; `nat_stats` counts rewritten
 * packets [0], rewritten ports [1] and helper failures [2] (truncated frames).
 */
#include "common.h"
#include <stddef.h>
#include <linux/pkt_cls.h>

char LICENSE[] SEC("license") = "GPL";

#define NAT_ADDR 0xC0000201 /* 192.0.2.1 */

struct nat_key {
	__be32 saddr;
	__be16 sport;
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct nat_key);
	__type(value, __u64);
} nat_sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} nat_stats SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&nat_stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tc")
int tc_nat(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	const int l3 = sizeof(*eth);
	__be32 old_ip, new_ip = bpf_htonl(NAT_ADDR);
	struct nat_key key = {};
	__be16 old_port, new_port;
	int l4, csum_off, mangled = 0;
	__u64 one = 1, *n;
	__u8 proto;
	int first;

	if ((void *)(iph + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || iph->version != 4 || iph->ihl < 5)
		return TC_ACT_OK;
	proto = iph->protocol;
	old_ip = iph->saddr;
	l4 = l3 + iph->ihl * 4;
	first = (iph->frag_off & bpf_htons(0x1fff)) == 0;

	if (bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, saddr), &new_ip, sizeof(new_ip), 0) < 0 ||
	    bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), old_ip, new_ip, sizeof(new_ip)) < 0) {
		bump(2);
		return TC_ACT_SHOT;
	}
	bump(0);
	if (!first)
		return TC_ACT_OK;
	if (proto == IPPROTO_TCP) {
		csum_off = l4 + offsetof(struct tcphdr, check);
	} else if (proto == IPPROTO_UDP) {
		csum_off = l4 + offsetof(struct udphdr, check);
		mangled = BPF_F_MARK_MANGLED_0;
	} else {
		return TC_ACT_OK;
	}
	if (bpf_skb_load_bytes(skb, l4, &old_port, sizeof(old_port)) < 0) {
		bump(2);
		return TC_ACT_OK;
	}
	new_port = old_port ^ bpf_htons(0x8000);
	if (bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, BPF_F_PSEUDO_HDR | mangled | sizeof(new_ip)) < 0 ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)) < 0 ||
	    bpf_skb_store_bytes(skb, l4, &new_port, sizeof(new_port), 0) < 0) {
		bump(2);
		return TC_ACT_OK;
	}
	bump(1);
	key.saddr = old_ip;
	key.sport = old_port;
	key.proto = proto;
	n = bpf_map_lookup_elem(&nat_sessions, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&nat_sessions, &key, &one, BPF_NOEXIST);
	return TC_ACT_OK;
}
