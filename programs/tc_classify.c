/*
 * tc_classify.c: a classifier that sets skb->mark, tc_classid, priority and cb[0], and a second
 * filter that acts on the mark.
 *
 * tc_classify (first filter): mark = 0x100 | IP protocol (0x1ff for non-IP, 0x1fe for malformed),
 * tc_classid = 1 + protocol, priority = protocol, cb[0] = length; counts per mark in
 * `class_count`; returns TC_ACT_UNSPEC so that the next filter runs (in direct-action mode a filter
 * returning OK would end the chain).
 * tc_police (second filter): counts per mark in `police_count`, drops ICMP (mark 0x101) frames
 * longer than 100 bytes (cb[0] from the first filter) and passes the rest (TC_ACT_OK).
 * tcx_guard (tcx/ingress): runs before clsact; drops frames shorter than 60 bytes (TCX_DROP),
 * leaves cb[1] = 0x7c and lets the rest go on (TCX_NEXT).
 */
#include "common.h"
#include <linux/pkt_cls.h>

char LICENSE[] SEC("license") = "GPL";

#ifndef TCX_NEXT
#define TCX_NEXT -1
#define TCX_DROP 2
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} class_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} police_count SEC(".maps");

static __always_inline void count(void *map, __u32 key)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(map, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(map, &key, &one, BPF_NOEXIST);
}

SEC("tc")
int tc_classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 proto = 0;
	__u32 mark;
	int l4;

	l4 = parse_l3(data, data_end, &proto);
	if (l4 == -2)
		mark = 0x1ff;
	else if (l4 < 0)
		mark = 0x1fe;
	else
		mark = 0x100 | proto;
	skb->mark = mark;
	skb->tc_classid = 1 + proto;
	skb->priority = proto;
	skb->cb[0] = skb->len;
	count(&class_count, mark);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tc_police(struct __sk_buff *skb)
{
	__u32 mark = skb->mark;

	if ((mark & 0xff00) != 0x100)
		return TC_ACT_OK;
	count(&police_count, mark);
	if (mark == (0x100 | IPPROTO_ICMP) && skb->cb[0] > 100)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

SEC("tcx/ingress")
int tcx_guard(struct __sk_buff *skb)
{
	skb->cb[1] = 0x7c;
	if (skb->len < 60)
		return TCX_DROP;
	return TCX_NEXT;
}
