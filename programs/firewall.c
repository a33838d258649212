/*
 * firewall.c: an IPv4 firewall (XDP).
 *
 * - `blocklist`: an LPM trie of source prefixes (key: prefix length + address, network order);
 *   a packet whose source matches is dropped and `bpf_printk` logs it.
 * - `allowed_ports`: a hash of TCP/UDP destination ports (host order) that may pass; other TCP
 *   and UDP packets are dropped. Non-TCP/UDP IPv4 (ICMP, ...) and non-IPv4 frames pass.
 * - `counters`: an array of {passed, dropped_blocked, dropped_port} updated with
 *   `__sync_fetch_and_add` (BPF atomic add), shared by every CPU.
 * Truncated IPv4 headers are dropped.
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr; /* network order */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
} blocklist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} allowed_ports SEC(".maps");

struct fw_counters {
	__u64 passed;
	__u64 dropped_blocked;
	__u64 dropped_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fw_counters);
} counters SEC(".maps");

SEC("xdp")
int firewall(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct lpm_v4_key key;
	struct fw_counters *cnt;
	struct iphdr *iph;
	__u32 zero = 0;
	__u16 dport;

	cnt = bpf_map_lookup_elem(&counters, &zero);
	if (!cnt)
		return XDP_ABORTED;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_DROP;

	key.prefixlen = 32;
	key.addr = iph->saddr;
	if (bpf_map_lookup_elem(&blocklist, &key)) {
		__sync_fetch_and_add(&cnt->dropped_blocked, 1);
		bpf_printk("firewall: drop blocked source %pI4", &iph->saddr);
		return XDP_DROP;
	}

	if (iph->protocol == IPPROTO_TCP || iph->protocol == IPPROTO_UDP) {
		/* dest port sits at the same offset (2) in TCP and UDP headers */
		__u16 *ports = (void *)iph + iph->ihl * 4;

		if ((void *)(ports + 2) > data_end)
			return XDP_DROP;
		dport = bpf_ntohs(ports[1]);
		if (!bpf_map_lookup_elem(&allowed_ports, &dport)) {
			__sync_fetch_and_add(&cnt->dropped_port, 1);
			bpf_printk("firewall: drop port %d proto %d", dport, iph->protocol);
			return XDP_DROP;
		}
	}
pass:
	__sync_fetch_and_add(&cnt->passed, 1);
	return XDP_PASS;
}
