/*
 * Programs for tests/test_kernel_redirect.py: a cpumap entry program and the redirects around it.
 *
 * - `to_cpu`: bpf_redirect_map through the cpumap `cpus`, key 1 (XDP_ABORTED when the slot is empty).
 * - `on_cpu` (xdp/cpumap): runs on CPU 1 before the frame goes up the stack there; it records what it
 *   sees of its context in `seen` (rx_queue_index, ingress_ifindex, the CPU, a run count) and then, by
 *   frame length: a multiple of 3 drops, one more redirects again through the devmap `ports` (key 0),
 *   the rest get their first byte set to 0xcc and pass (up the stack on CPU 1).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} seen SEC(".maps");

SEC("xdp")
int to_cpu(struct xdp_md *ctx)
{
	return bpf_redirect_map(&cpus, 1, XDP_ABORTED);
}

static __always_inline void put(__u32 key, __u32 value)
{
	__u32 *slot = bpf_map_lookup_elem(&seen, &key);

	if (slot)
		*slot = value;
}

SEC("xdp/cpumap")
int on_cpu(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *first = data;
	__u32 key = 3, *runs;
	__u32 len = data_end - data;

	put(0, ctx->rx_queue_index);
	put(1, ctx->ingress_ifindex);
	put(2, bpf_get_smp_processor_id());
	runs = bpf_map_lookup_elem(&seen, &key);
	if (runs)
		__sync_fetch_and_add(runs, 1);
	if ((void *)(first + 1) > data_end || len % 3 == 0)
		return XDP_DROP;
	if (len % 3 == 1)
		return bpf_redirect_map(&ports, 0, XDP_DROP);
	*first = 0xcc;
	return XDP_PASS;
}
