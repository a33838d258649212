/*
 * calls.c: bpf-to-bpf calls, global data, loops (XDP).
 *
 * - `__noinline` static subprograms three levels deep (calls_main -> summarize -> fold_sum ->
 *   mix) with several arguments and their own stack buffers: the loader appends them after the entry
 *   function and fixes the call offsets, as libbpf does.
 * - global data: `.data` (`magic`, a counter start value), `.bss` (`packets_seen`, `last_sum`,
 *   `last_hash`), `.rodata` (`cfg`, a const config the verifier may trust once frozen).
 * - a bounded loop over the first bytes of the frame, and `bpf_loop` with a callback (a
 *   PSEUDO_FUNC `lddw` of the callback's address).
 * Verdict: frames shorter than cfg.min_len are dropped, the rest pass.
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct config {
	__u32 min_len;
	__u32 loop_rounds;
	__u32 seed;
};

const volatile struct config cfg = { .min_len = 60, .loop_rounds = 16, .seed = 0x9e3779b9 };

__u64 magic = 0x5844505349ULL; /* .data */
__u64 packets_seen;            /* .bss */
__u32 last_sum;
__u32 last_hash;

struct loop_ctx {
	__u32 hash;
	__u32 rounds;
};

static __noinline __u32 mix(__u32 a, __u32 b, __u32 c)
{
	__u32 buf[4] = { a, b, c, a ^ b };
	__u32 i, h = 0;

	for (i = 0; i < 4; i++)
		h = (h ^ buf[i]) * 16777619u;
	return h;
}

static __noinline __u32 fold_sum(__u32 sum, __u32 len)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return mix(sum, len, cfg.seed);
}

static __noinline __u32 summarize(struct xdp_md *ctx, __u32 nbytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 copy[16] = {};
	__u32 sum = 0;
	int i;

	/* bounded loop: at most 16 bytes of the frame */
	for (i = 0; i < 16; i++) {
		__u8 *p = data + i;

		if (i >= nbytes || (void *)(p + 1) > data_end)
			break;
		copy[i] = *p;
	}
	for (i = 0; i < 16; i += 2)
		sum += (copy[i] << 8) | copy[i + 1];
	return fold_sum(sum, (__u32)(data_end - data));
}

static long loop_step(__u32 index, void *arg)
{
	struct loop_ctx *lc = arg;

	lc->hash = (lc->hash ^ index) * 16777619u;
	lc->rounds++;
	return 0;
}

SEC("xdp")
int calls_main(struct xdp_md *ctx)
{
	struct loop_ctx lc = { .hash = cfg.seed, .rounds = 0 };
	__u32 len = ctx->data_end - ctx->data;

	packets_seen += magic ? 1 : 2;
	last_sum = summarize(ctx, 16);
	bpf_loop(cfg.loop_rounds, loop_step, &lc, 0);
	last_hash = lc.hash ^ lc.rounds;
	if (len < cfg.min_len)
		return XDP_DROP;
	return XDP_PASS;
}
