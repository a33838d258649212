/*
 * tc_vlan.c: a VLAN tagger with bpf_skb_vlan_pop / bpf_skb_vlan_push.
 *
 * A frame that carries an 802.1Q/802.1ad tag in its bytes loses it (bpf_skb_vlan_pop; a second tag
 * below moves into the offload tag); its VLAN id is counted in `vlan_popped`. Every frame is then
 * tagged VLAN 100 priority 3 (bpf_skb_vlan_push sets the offload tag: the bytes do not change);
 * IPv6 frames get a second, 802.1ad tag 200 on top, which pushes the first one into the bytes.
 * `vlan_seen` keeps what the program reads back from the context afterwards (vlan_present,
 * vlan_tci, vlan_proto, protocol, len) and the helpers' return values.
 */
#include "common.h"
#include <linux/pkt_cls.h>

char LICENSE[] SEC("license") = "GPL";

struct vlan_seen {
	__u32 present;
	__u32 tci;
	__u32 proto;
	__u32 protocol;
	__u32 len;
	__s32 pop_ret;
	__s32 push_ret;
	__s32 push2_ret;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vlan_seen);
} vlan_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} vlan_popped SEC(".maps");

SEC("tc")
int tc_vlan(struct __sk_buff *skb)
{
	struct vlan_seen seen = { .pop_ret = 1, .push2_ret = 1 };
	__u32 zero = 0, vid;
	__u64 one = 1, *n;
	struct vlan_hdr vh;

	if (skb->protocol == bpf_htons(ETH_P_8021Q) || skb->protocol == bpf_htons(ETH_P_8021AD)) {
		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) - 2, &vh, sizeof(vh)) < 0)
			return TC_ACT_SHOT;
		vid = bpf_ntohs(vh.h_vlan_encapsulated_proto) & 0x0fff;
		seen.pop_ret = bpf_skb_vlan_pop(skb);
		n = bpf_map_lookup_elem(&vlan_popped, &vid);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			bpf_map_update_elem(&vlan_popped, &vid, &one, BPF_NOEXIST);
	}
	seen.push_ret = bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), 100 | (3 << 13));
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		seen.push2_ret = bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021AD), 200);
	seen.present = skb->vlan_present;
	seen.tci = skb->vlan_tci;
	seen.proto = skb->vlan_proto;
	seen.protocol = skb->protocol;
	seen.len = skb->len;
	bpf_map_update_elem(&vlan_seen, &zero, &seen, BPF_ANY);
	return TC_ACT_OK;
}
