/*
 * tc_probe.c: one TC program that calls the helper named by cb[0] with arguments cb[1..4], so that
 * tests can set up a helper's edge cases through __sk_buff (BPF_PROG_TEST_RUN accepts cb in ctx_in)
 * and compare everything the kernel reports back: the return value (in mark, its upper half in
 * priority), what the context reads afterwards (cb[1..4]), the packet, and the bytes a helper
 * filled in (`probe_buf`).
 *
 * ops: 1 skb_load_bytes(a, 16)  2 skb_load_bytes_relative(a, 16, b)  3 skb_store_bytes(a, 0xab x4,
 * 4, b)  4 l3_csum_replace(a, b, c, d)  5 l4_csum_replace(a, b, c, d)  6 skb_pull_data(a)
 * 7 skb_change_tail(a, b)  8 skb_change_head(a, b)  9 skb_adjust_room(a, b, c | d << 32)
 * 10 skb_change_proto(a, b)  11 skb_change_type(a)  12 skb_vlan_push(a, b)  13 skb_vlan_pop
 * 14 csum_level(a)  15 csum_update(a)  16 skb_ecn_set_ce  17 redirect(a, b) (returned)
 * 18 get_route_realm  19 skb_get_tunnel_key(buf, a, b)  20 set_hash(a) then get_hash_recalc
 * 21 redirect_peer(a, b) (returned)  22 redirect_neigh(a, NULL, 0, b) (returned)
 * 23 skb_vlan_push twice (a, b) then (a, c)  24 skb_set_tunnel_key(buf of cb, a, b)
 */
#include "common.h"
#include <linux/pkt_cls.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[48]);
} probe_buf SEC(".maps");

/* the verifier wants a constant (non-zero, bounded) size: the sizes the tests use */
#define TUNNEL_SIZES(call, size, flags)                                                    \
	switch (size) {                                                                    \
	case 8: call(skb, (void *)buf, 8, flags); break;                                   \
	case 22: call(skb, (void *)buf, 22, flags); break;                                 \
	case 24: call(skb, (void *)buf, 24, flags); break;                                 \
	case 28: call(skb, (void *)buf, 28, flags); break;                                 \
	case 32: call(skb, (void *)buf, 32, flags); break;                                 \
	case 45: call(skb, (void *)buf, 45, flags); break;                                 \
	default: call(skb, (void *)buf, 44, flags); break;                                 \
	}

SEC("tc")
int tc_probe(struct __sk_buff *skb)
{
	__u32 op = skb->cb[0], a = skb->cb[1], b = skb->cb[2], c = skb->cb[3], d = skb->cb[4];
	__u8 buf[48] = {};
	__u32 zero = 0;
	long ret = -1000;
	int act = TC_ACT_OK;

	switch (op) {
	case 1: ret = bpf_skb_load_bytes(skb, a, buf, 16); break;
	case 2: ret = bpf_skb_load_bytes_relative(skb, a, buf, 16, b); break;
	case 3:
		__builtin_memset(buf, 0xab, 4);
		ret = bpf_skb_store_bytes(skb, a, buf, 4, b);
		break;
	case 4: ret = bpf_l3_csum_replace(skb, a, b, c, d); break;
	case 5: ret = bpf_l4_csum_replace(skb, a, b, c, d); break;
	case 6: ret = bpf_skb_pull_data(skb, a); break;
	case 7: ret = bpf_skb_change_tail(skb, a, b); break;
	case 8: ret = bpf_skb_change_head(skb, a, b); break;
	case 9: ret = bpf_skb_adjust_room(skb, (__s32)a, b, c | ((__u64)d << 32)); break;
	case 10: ret = bpf_skb_change_proto(skb, a, b); break;
	case 11: ret = bpf_skb_change_type(skb, a); break;
	case 12: ret = bpf_skb_vlan_push(skb, a, b); break;
	case 13: ret = bpf_skb_vlan_pop(skb); break;
	case 14: ret = bpf_csum_level(skb, a); break;
	case 15: ret = bpf_csum_update(skb, a); break;
	case 16: ret = bpf_skb_ecn_set_ce(skb); break;
	case 17: act = ret = bpf_redirect(a, b); break;
	case 18: ret = bpf_get_route_realm(skb); break;
	case 19: TUNNEL_SIZES(ret = bpf_skb_get_tunnel_key, a, b); break;
	case 20:
		bpf_set_hash(skb, a);
		ret = bpf_get_hash_recalc(skb);
		break;
	case 21: act = ret = bpf_redirect_peer(a, b); break;
	case 22: act = ret = bpf_redirect_neigh(a, 0, 0, b); break;
	case 23:
		ret = bpf_skb_vlan_push(skb, a, b);
		if (!ret)
			ret = bpf_skb_vlan_push(skb, a, c);
		break;
	case 24:
		*(__u32 *)&buf[4] = c;
		*(__u32 *)&buf[0] = d;
		buf[20] = 7;
		buf[21] = 9;
		TUNNEL_SIZES(ret = bpf_skb_set_tunnel_key, a, b);
		break;
	}
	skb->mark = (__u32)ret;
	skb->priority = (__u32)((__u64)ret >> 32);
	skb->cb[1] = skb->protocol;
	skb->cb[2] = skb->len;
	skb->cb[3] = skb->vlan_tci | (skb->vlan_present << 16);
	skb->cb[4] = skb->pkt_type | (skb->vlan_proto << 16);
	bpf_map_update_elem(&probe_buf, &zero, buf, BPF_ANY);
	return act;
}
