/*
 * chain.c: three XDP programs meant to run together on one interface through libxdp's
 * dispatcher, each with its run configuration in the `.xdp_run_config` section
 * (XDP_RUN_CONFIG, as libxdp's xdp/xdp_helpers.h defines it; defined here so libxdp's headers
 * are not needed):
 *
 * - `chain_count` (priority 10, continues on XDP_PASS): counts every frame in `.bss`.
 * - `chain_filter` (priority 20, continues on XDP_PASS and XDP_DROP): drops frames shorter
 *   than 60 bytes; the dispatcher still runs the next program after its DROP.
 * - `chain_last` (priority 30, default chain actions): passes IPv4 and drops everything else.
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

/* libxdp's macro: a BTF-described struct named _<prog> in section .xdp_run_config */
#define _CONCAT(x, y) x##y
#define XDP_RUN_CONFIG(f) _CONCAT(_, f) SEC(".xdp_run_config")

__u64 frames;
__u64 short_frames;

SEC("xdp")
int chain_count(struct xdp_md *ctx)
{
	__sync_fetch_and_add(&frames, 1);
	return XDP_PASS;
}

struct {
	__uint(priority, 10);
	__uint(XDP_PASS, 1);
} XDP_RUN_CONFIG(chain_count);

SEC("xdp")
int chain_filter(struct xdp_md *ctx)
{
	if (ctx->data_end - ctx->data < 60) {
		__sync_fetch_and_add(&short_frames, 1);
		return XDP_DROP;
	}
	return XDP_PASS;
}

struct {
	__uint(priority, 20);
	__uint(XDP_PASS, 1);
	__uint(XDP_DROP, 1);
} XDP_RUN_CONFIG(chain_filter);

SEC("xdp")
int chain_last(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	return eth->h_proto == bpf_htons(ETH_P_IP) ? XDP_PASS : XDP_DROP;
}

struct {
	__uint(priority, 30);
} XDP_RUN_CONFIG(chain_last);
