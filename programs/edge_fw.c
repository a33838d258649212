/*
 * edge_fw.c: a larger edge firewall (XDP), the JIT's compile-time workload (~1000 instructions).
 *
 * - L2: Ethernet with up to two VLAN tags (802.1Q / 802.1ad, QinQ); ARP passes, other non-IP drops.
 * - IPv4: version, header length and total length checked, the header checksum verified (no options),
 *   fragments counted (later fragments pass without L4 checks); IPv6: up to four extension headers
 *   walked (hop-by-hop, routing, destination options, fragment, AH).
 * - `blocked_v4` / `blocked_v6`: hashes of blocked source addresses (dropped).
 * - TCP: flag sanity (no flags, SYN+FIN, SYN+RST, FIN+PSH+URG dropped), the options walked (up to 12:
 *   MSS, window scale, SACK-permitted, timestamps; malformed lengths dropped); a SYN whose MSS is below
 *   `config.min_mss` is dropped.
 * - UDP: length checked against the packet; ICMP / ICMPv6 echo requests counted.
 * - `port_deny`: array indexed by destination port, bit 0 denies TCP, bit 1 UDP.
 * - `flows`: LRU hash of 5-tuples (IPv4 and IPv6) -> packets, bytes, TCP SYNs and the last MSS seen.
 * - `reasons`: per-CPU array of counters per verdict reason (see enum reason).
 * `edge_fw_v4` is the same firewall for untagged IPv4 only (other frames: R_NOT_IP, dropped), walking
 * at most 4 TCP options (a well-formed packet with more passes unchecked past the fourth).
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

#define MAX_VLAN 2
#define MAX_EXT 4
#define MAX_TCP_OPTS 12

enum reason {
	R_PASS,
	R_NOT_IP,
	R_MALFORMED,
	R_BAD_CSUM,
	R_BLOCKED,
	R_TCP_FLAGS,
	R_TCP_OPTS,
	R_PORT,
	R_FRAGMENT,
	R_ECHO,
	R_ARP,
	R_MAX,
};

struct flow_key {
	__u8 family;
	__u8 proto;
	__u16 sport;
	__u16 dport;
	__u16 pad;
	__u32 src[4];
	__u32 dst[4];
};

struct flow_val {
	__u64 packets;
	__u64 bytes;
	__u32 syns;
	__u32 mss;
};

struct config {
	__u32 min_mss;
	__u32 flags;
};

struct in6_key {
	__u32 a[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, R_MAX);
	__type(key, __u32);
	__type(value, __u64);
} reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} blocked_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct in6_key);
	__type(value, __u32);
} blocked_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} port_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct ctx {
	void *data;
	void *data_end;
	struct flow_key key;
	__u32 l4_off;
	__u32 mss;
	__u8 syn;
};

static __always_inline int verdict(__u32 why, int action)
{
	__u64 *n = bpf_map_lookup_elem(&reasons, &why);

	if (n)
		*n += 1;
	return action;
}

static __always_inline int ipv4_csum_ok(struct iphdr *iph)
{
	__u16 *w = (__u16 *)iph;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/* Walk the TCP options: 0 when well formed, -1 when an option's length is bad. */
static __always_inline int tcp_options(struct ctx *c, struct tcphdr *tcp, const int max_opts)
{
	__u8 *p = (__u8 *)(tcp + 1);
	__u8 *end = (__u8 *)tcp + tcp->doff * 4;

	/* (no "end > data_end" test first: clang would then drop the per-option data_end tests the
	 * verifier needs) */
#pragma unroll
	for (int i = 0; i < max_opts; i++) {
		__u8 kind, len;

		if (p + 1 > end)
			return 0;
		if ((void *)(p + 1) > c->data_end)
			return -1;
		kind = p[0];
		if (kind == 0)
			return 0;
		if (kind == 1) {
			p++;
			continue;
		}
		if (p + 2 > end || (void *)(p + 2) > c->data_end)
			return -1;
		len = p[1];
		if (len < 2 || p + len > end)
			return -1;
		if (kind == 2) {
			if (len != 4 || (void *)(p + 4) > c->data_end)
				return -1;
			c->mss = (p[2] << 8) | p[3];
		} else if (kind == 3) {
			if (len != 3)
				return -1;
		} else if (kind == 4) {
			if (len != 2)
				return -1;
		} else if (kind == 8) {
			if (len != 10)
				return -1;
		}
		p += len;
	}
	return 0;
}

static __always_inline int account(struct ctx *c, __u64 bytes)
{
	struct flow_val *v = bpf_map_lookup_elem(&flows, &c->key);

	if (v) {
		__sync_fetch_and_add(&v->packets, 1);
		__sync_fetch_and_add(&v->bytes, bytes);
		if (c->syn)
			__sync_fetch_and_add(&v->syns, 1);
		if (c->mss)
			v->mss = c->mss;
		return 0;
	}
	struct flow_val nv = { .packets = 1, .bytes = bytes, .syns = c->syn, .mss = c->mss };

	return bpf_map_update_elem(&flows, &c->key, &nv, BPF_ANY);
}

static __always_inline int l4(struct ctx *c, __u64 bytes, const int max_opts)
{
	void *data_end = c->data_end;
	__u32 off = c->l4_off & 0x1ff;
	__u32 deny_key, *deny;
	__u8 proto = c->key.proto;

	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = c->data + off;
		__u8 flags;

		if ((void *)(tcp + 1) > data_end || tcp->doff < 5)
			return verdict(R_MALFORMED, XDP_DROP);
		flags = ((__u8 *)tcp)[13];
		if ((flags & 0x3f) == 0 || (flags & 0x03) == 0x03 || (flags & 0x06) == 0x06 ||
		    (flags & 0x29) == 0x29)
			return verdict(R_TCP_FLAGS, XDP_DROP);
		c->syn = (flags & 0x12) == 0x02;
		if (tcp_options(c, tcp, max_opts) < 0)
			return verdict(R_TCP_OPTS, XDP_DROP);
		if (c->syn) {
			__u32 zero = 0;
			struct config *cfg = bpf_map_lookup_elem(&config, &zero);

			if (cfg && cfg->min_mss && c->mss && c->mss < cfg->min_mss)
				return verdict(R_TCP_OPTS, XDP_DROP);
		}
		c->key.sport = bpf_ntohs(tcp->source);
		c->key.dport = bpf_ntohs(tcp->dest);
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp = c->data + off;

		if ((void *)(udp + 1) > data_end || bpf_ntohs(udp->len) < sizeof(*udp) ||
		    (void *)udp + bpf_ntohs(udp->len) > data_end)
			return verdict(R_MALFORMED, XDP_DROP);
		c->key.sport = bpf_ntohs(udp->source);
		c->key.dport = bpf_ntohs(udp->dest);
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		__u8 *icmp = c->data + off;

		if ((void *)(icmp + 4) > data_end)
			return verdict(R_MALFORMED, XDP_DROP);
		if ((proto == IPPROTO_ICMP && icmp[0] == 8) || (proto == IPPROTO_ICMPV6 && icmp[0] == 128))
			verdict(R_ECHO, 0);
		c->key.sport = icmp[0];
		c->key.dport = icmp[1];
		account(c, bytes);
		return verdict(R_PASS, XDP_PASS);
	} else {
		account(c, bytes);
		return verdict(R_PASS, XDP_PASS);
	}
	deny_key = c->key.dport;
	deny = bpf_map_lookup_elem(&port_deny, &deny_key);
	if (deny && (*deny & (proto == IPPROTO_TCP ? 1 : 2)))
		return verdict(R_PORT, XDP_DROP);
	account(c, bytes);
	return verdict(R_PASS, XDP_PASS);
}

static __always_inline int ipv6(struct ctx *c, __u32 off)
{
	struct ipv6hdr *ip6 = c->data + off;
	__u8 next;

	if ((void *)(ip6 + 1) > c->data_end)
		return verdict(R_MALFORMED, XDP_DROP);
	struct in6_key src;

	__builtin_memcpy(&src, &ip6->saddr, sizeof(src));
	if (bpf_map_lookup_elem(&blocked_v6, &src))
		return verdict(R_BLOCKED, XDP_DROP);
	c->key.family = 6;
	__builtin_memcpy(c->key.src, &ip6->saddr, 16);
	__builtin_memcpy(c->key.dst, &ip6->daddr, 16);
	next = ip6->nexthdr;
	off += sizeof(*ip6);
#pragma unroll
	for (int i = 0; i < MAX_EXT; i++) {
		__u8 *h = c->data + (off & 0x3ff);

		if (next != 0 && next != 43 && next != 60 && next != 44 && next != 51)
			break;
		if ((void *)(h + 8) > c->data_end)
			return verdict(R_MALFORMED, XDP_DROP);
		if (next == 44) {
			if ((h[2] << 8 | h[3]) & 0xfff8) {
				next = h[0];
				c->key.proto = next;
				return verdict(R_FRAGMENT, XDP_PASS);
			}
			off += 8;
		} else if (next == 51) {
			off += (h[1] + 2) * 4;
		} else {
			off += (h[1] + 1) * 8;
		}
		next = h[0];
	}
	c->key.proto = next;
	c->l4_off = off;
	return -1;
}

static __always_inline int ipv4(struct ctx *c, __u32 off)
{
	struct iphdr *iph = c->data + off;
	__u32 ihl;

	if ((void *)(iph + 1) > c->data_end)
		return verdict(R_MALFORMED, XDP_DROP);
	ihl = iph->ihl * 4;
	if (iph->version != 4 || ihl < sizeof(*iph) || bpf_ntohs(iph->tot_len) < ihl ||
	    (void *)iph + bpf_ntohs(iph->tot_len) > c->data_end)
		return verdict(R_MALFORMED, XDP_DROP);
	if (ihl == sizeof(*iph) && !ipv4_csum_ok(iph))
		return verdict(R_BAD_CSUM, XDP_DROP);
	if (bpf_map_lookup_elem(&blocked_v4, &iph->saddr))
		return verdict(R_BLOCKED, XDP_DROP);
	c->key.family = 4;
	c->key.proto = iph->protocol;
	c->key.src[0] = iph->saddr;
	c->key.dst[0] = iph->daddr;
	if (iph->frag_off & bpf_htons(0x1fff))
		return verdict(R_FRAGMENT, XDP_PASS);
	c->l4_off = off + ihl;
	return -1;
}

SEC("xdp")
int edge_fw(struct xdp_md *xdp)
{
	struct ctx c = {};
	struct ethhdr *eth;
	__u16 h_proto;
	__u32 off = sizeof(*eth);
	int r;

	c.data = (void *)(long)xdp->data;
	c.data_end = (void *)(long)xdp->data_end;
	eth = c.data;
	if ((void *)(eth + 1) > c.data_end)
		return verdict(R_MALFORMED, XDP_DROP);
	h_proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < MAX_VLAN; i++) {
		struct vlan_hdr *vlan = c.data + off;

		if (h_proto != bpf_htons(ETH_P_8021Q) && h_proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > c.data_end)
			return verdict(R_MALFORMED, XDP_DROP);
		h_proto = vlan->h_vlan_encapsulated_proto;
		off += sizeof(*vlan);
	}
	if (h_proto == bpf_htons(ETH_P_ARP))
		return verdict(R_ARP, XDP_PASS);
	if (h_proto == bpf_htons(ETH_P_IP))
		r = ipv4(&c, off);
	else if (h_proto == bpf_htons(ETH_P_IPV6))
		r = ipv6(&c, off);
	else
		return verdict(R_NOT_IP, XDP_DROP);
	if (r >= 0)
		return r;
	return l4(&c, (__u64)(c.data_end - c.data), MAX_TCP_OPTS);
}

/* The IPv4-only variant (no VLAN tags, no IPv6, at most 4 TCP options walked): a smaller program. */
SEC("xdp")
int edge_fw_v4(struct xdp_md *xdp)
{
	struct ctx c = {};
	struct ethhdr *eth;
	int r;

	c.data = (void *)(long)xdp->data;
	c.data_end = (void *)(long)xdp->data_end;
	eth = c.data;
	if ((void *)(eth + 1) > c.data_end)
		return verdict(R_MALFORMED, XDP_DROP);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return verdict(R_ARP, XDP_PASS);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return verdict(R_NOT_IP, XDP_DROP);
	r = ipv4(&c, sizeof(*eth));
	if (r >= 0)
		return r;
	return l4(&c, (__u64)(c.data_end - c.data), 4);
}
