/*
 * core.c: CO-RE (compile once, run everywhere) relocations on packet headers (XDP).
 *
 * Built against vmlinux_min.h (preserve_access_index types), so every field offset below is a
 * relocation the loader resolves against the running kernel's BTF (/sys/kernel/btf/vmlinux) or
 * xdpsim's shipped BTF: field byte offsets (ctx and header fields), a bitfield read (iphdr.ihl /
 * version: byte offset, size, lshift, rshift), field existence and size, type existence / size,
 * and enum values. The results are stored in the `.bss` array `core_results`, so tests can read
 * what the loader resolved; the verdict passes IPv4 UDP and drops other IPv4, passes the rest.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* [0] ihl, [1] version, [2] exists(iphdr.ttl), [3] exists(iphdr___old.options_word),
 * [4] sizeof field iphdr.saddr, [5] type exists iphdr, [6] type size udphdr,
 * [7] enum XDP_PASS, [8] enum value exists XDP_TELEPORT___x, [9] udp dest port */
__u64 core_results[10];

SEC("xdp")
int core_parse(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	struct udphdr *udp;

	core_results[2] = bpf_core_field_exists(iph->ttl);
	core_results[3] = bpf_core_field_exists(((struct iphdr___old *)0)->options_word);
	core_results[4] = bpf_core_field_size(iph->saddr);
	core_results[5] = bpf_core_type_exists(struct iphdr);
	core_results[6] = bpf_core_type_size(struct udphdr);
	core_results[7] = bpf_core_enum_value(enum xdp_action, XDP_PASS);
	core_results[8] = bpf_core_enum_value_exists(enum xdp_action___x, XDP_TELEPORT___x);

	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(0x0800))
		return XDP_PASS;
	core_results[0] = BPF_CORE_READ_BITFIELD(iph, ihl);
	core_results[1] = BPF_CORE_READ_BITFIELD(iph, version);
	if (iph->protocol != 17)
		return XDP_DROP;
	udp = (void *)(iph + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_DROP;
	core_results[9] = bpf_ntohs(udp->dest);
	return XDP_PASS;
}
