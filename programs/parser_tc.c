/*
 * parser_tc.c: the seed's parser as a TC (clsact, direct-action) classifier.
 *
 * The seed's own example: `int packet_parser(struct __sk_buff *skb)` parses L2/L3, counts packets
 * per IP protocol and does `bpf_tail_call(skb, &ipproto_jmp_table, ipproto)` into parse_tcp or
 * parse_udp; unknown protocols fall through to TC_ACT_OK. The handlers count per destination port
 * and shoot TCP to port 23 and UDP to port 19 (TC_ACT_SHOT); truncated frames are shot too.
 * It reads the packet with direct packet access (skb->data, skb->data_end).
 */
#include "common.h"
#include <linux/pkt_cls.h>

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

int parse_tcp(struct __sk_buff *skb);
int parse_udp(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 256);
	__uint(key_size, sizeof(__u32));
	__array(values, int (struct __sk_buff *));
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

SEC("tc")
int packet_parser(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 ipproto = 0;
	__u32 key;
	__u64 *count;
	int l4;

	l4 = parse_l3(data, data_end, &ipproto);
	if (l4 == -2)
		return TC_ACT_OK;
	if (l4 < 0)
		return TC_ACT_SHOT;

	key = ipproto;
	count = bpf_map_lookup_elem(&proto_count, &key);
	if (count)
		*count += 1;

	bpf_tail_call(skb, &ipproto_jmp_table, ipproto);
	/* default: process unknown protocol */
	return TC_ACT_OK;
}

SEC("tc")
int parse_tcp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct tcphdr *tcp;
	__u8 ipproto = 0;
	__u16 dport;
	int l4;

	l4 = parse_l3(data, data_end, &ipproto);
	if (l4 < 0 || l4 > 128)
		return TC_ACT_SHOT;
	tcp = data + l4;
	if ((void *)(tcp + 1) > data_end)
		return TC_ACT_SHOT;
	dport = bpf_ntohs(tcp->dest);
	count_port(IPPROTO_TCP, dport, skb->len);
	return dport == 23 ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("tc")
int parse_udp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct udphdr *udp;
	__u8 ipproto = 0;
	__u16 dport;
	int l4;

	l4 = parse_l3(data, data_end, &ipproto);
	if (l4 < 0 || l4 > 128)
		return TC_ACT_SHOT;
	udp = data + l4;
	if ((void *)(udp + 1) > data_end)
		return TC_ACT_SHOT;
	dport = bpf_ntohs(udp->dest);
	count_port(IPPROTO_UDP, dport, skb->len);
	return dport == 19 ? TC_ACT_SHOT : TC_ACT_OK;
}
