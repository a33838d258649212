/*
 * vmlinux_min.h: a tiny vmlinux.h-style header for core.c: kernel types as the kernel's BTF
 * describes them, marked preserve_access_index so that clang records CO-RE relocations for every
 * field access and loaders move the offsets to the running kernel's layout.
 * The layouts here are deliberately the kernel's; `struct iphdr___old` and `enum xdp_action___x`
 * are "flavours" (the ___suffix is ignored when matching) with a field / value the kernel lacks.
 */
#ifndef VMLINUX_MIN_H
#define VMLINUX_MIN_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u16 __sum16;
typedef __u32 __wsum;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ethhdr {
	unsigned char h_dest[6];
	unsigned char h_source[6];
	__be16 h_proto;
};

struct iphdr {
	__u8 ihl : 4, version : 4;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct iphdr___old {
	__u8 ttl;
	__u32 options_word; /* no such field in the kernel's struct iphdr */
};

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

#pragma clang attribute pop

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP,
	XDP_PASS,
	XDP_TX,
	XDP_REDIRECT,
};

enum xdp_action___x {
	XDP_TELEPORT___x = 42, /* no such action in the kernel */
};

#endif
