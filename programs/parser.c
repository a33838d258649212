/*
 * parser.c: the seed's packet parser as an XDP program (the reference workload of the benchmarks).
 *
 * `packet_parser` parses Ethernet (plus one VLAN tag) and IPv4/IPv6, counts packets per IP protocol
 * in a per-CPU array, then tail-calls through `ipproto_jmp_table` (a prog array filled declaratively
 * with `__array(values, ...)`, as libbpf does) into `parse_tcp` (slot 6) or `parse_udp` (slot 17).
 * Other protocols fall through to XDP_PASS; non-IP frames (ARP, ...) pass; truncated or malformed
 * frames are dropped.
 *
 * parse_tcp / parse_udp bounds-check their header, count packets and bytes per (protocol,
 * destination port) in a hash map, drop TCP to port 23 (telnet) and UDP to port 19 (chargen), and
 * pass the rest. A truncated L4 header is dropped.
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} proto_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct port_key);
	__type(value, struct port_stats);
} port_stats SEC(".maps");

int parse_tcp(struct xdp_md *ctx);
int parse_udp(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 256);
	__uint(key_size, sizeof(__u32));
	__array(values, int (struct xdp_md *));
} ipproto_jmp_table SEC(".maps") = {
	.values = {
		[IPPROTO_TCP] = (void *)&parse_tcp,
		[IPPROTO_UDP] = (void *)&parse_udp,
	},
};

static __always_inline void count_port(__u8 proto, __u16 port, __u64 bytes)
{
	struct port_key key = { .proto = proto, .port = port };
	struct port_stats *st = bpf_map_lookup_elem(&port_stats, &key);

	if (st) {
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, bytes);
	} else {
		struct port_stats init = { .packets = 1, .bytes = bytes };

		bpf_map_update_elem(&port_stats, &key, &init, BPF_NOEXIST);
	}
}

SEC("xdp")
int packet_parser(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 proto = 0;
	__u32 key;
	__u64 *count;
	int l4;

	l4 = parse_l3(data, data_end, &proto);
	if (l4 == -2)
		return XDP_PASS; /* not IP */
	if (l4 < 0)
		return XDP_DROP; /* truncated or malformed */

	key = proto;
	count = bpf_map_lookup_elem(&proto_count, &key);
	if (count)
		*count += 1;

	bpf_tail_call(ctx, &ipproto_jmp_table, proto);
	/* empty slot: no handler for this protocol */
	return XDP_PASS;
}

SEC("xdp")
int parse_tcp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *tcp;
	__u8 proto = 0;
	__u16 dport;
	int l4;

	l4 = parse_l3(data, data_end, &proto);
	if (l4 < 0 || l4 > 128)
		return XDP_DROP;
	tcp = data + l4;
	if ((void *)(tcp + 1) > data_end)
		return XDP_DROP;
	dport = bpf_ntohs(tcp->dest);
	count_port(IPPROTO_TCP, dport, data_end - data);
	if (dport == 23)
		return XDP_DROP; /* no telnet */
	return XDP_PASS;
}

SEC("xdp")
int parse_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct udphdr *udp;
	__u8 proto = 0;
	__u16 dport;
	int l4;

	l4 = parse_l3(data, data_end, &proto);
	if (l4 < 0 || l4 > 128)
		return XDP_DROP;
	udp = data + l4;
	if ((void *)(udp + 1) > data_end)
		return XDP_DROP;
	dport = bpf_ntohs(udp->dest);
	count_port(IPPROTO_UDP, dport, data_end - data);
	if (dport == 19)
		return XDP_DROP; /* no chargen */
	return XDP_PASS;
}
