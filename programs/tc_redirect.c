/*
 * tc_redirect.c: TC redirects.
 *
 * tc_redirect: bpf_redirect to the ifindex and flags in `redirect_cfg[0]` (BPF_F_INGRESS: the
 * target's ingress); TC_ACT_REDIRECT, or TC_ACT_SHOT for flags the kernel refuses.
 * tc_clone: bpf_clone_redirect of every frame to `redirect_cfg[0]`, the original passes; the
 * helper's return value is counted in `clone_ret`.
 * tc_mark_egress: an egress filter that records the mark the packet carries (set at ingress by
 * another program) in `egress_marks`.
 */
#include "common.h"
#include <linux/pkt_cls.h>

char LICENSE[] SEC("license") = "GPL";

struct redirect_cfg {
	__u32 ifindex;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirect_cfg);
} redirect_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __s32);
	__type(value, __u64);
} clone_ret SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} egress_marks SEC(".maps");

static __always_inline void count(void *map, __u32 key)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(map, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(map, &key, &one, BPF_NOEXIST);
}

SEC("tc")
int tc_redirect(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct redirect_cfg *cfg = bpf_map_lookup_elem(&redirect_cfg, &zero);

	if (!cfg)
		return TC_ACT_SHOT;
	return bpf_redirect(cfg->ifindex, cfg->flags);
}

SEC("tc")
int tc_clone(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct redirect_cfg *cfg = bpf_map_lookup_elem(&redirect_cfg, &zero);

	if (!cfg)
		return TC_ACT_SHOT;
	count(&clone_ret, bpf_clone_redirect(skb, cfg->ifindex, cfg->flags));
	return TC_ACT_OK;
}

SEC("tc")
int tc_mark_egress(struct __sk_buff *skb)
{
	count(&egress_marks, skb->mark);
	return TC_ACT_OK;
}
