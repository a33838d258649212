/* common.h: small definitions shared by the bundled programs (not a program itself). */
#ifndef XDPSIM_PROGRAMS_COMMON_H
#define XDPSIM_PROGRAMS_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* linux/if_vlan.h keeps struct vlan_hdr in the kernel-internal header; this is its layout. */
struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

/* Key of the per-port statistics: IP protocol and destination port (host order). */
struct port_key {
	__u8 proto;
	__u8 pad;
	__u16 port;
};

struct port_stats {
	__u64 packets;
	__u64 bytes;
};

/*
 * Parse Ethernet (with at most one 802.1Q/802.1ad tag) and the IPv4/IPv6 header that follows.
 * Returns the offset of the L4 header from `data` and stores the IP protocol in *proto;
 * -1 when the frame is truncated or malformed, -2 when it is not IP (ARP, ...).
 */
static __always_inline int parse_l3(void *data, void *data_end, __u8 *proto)
{
	struct ethhdr *eth = data;
	__u16 h_proto;
	int off = sizeof(*eth);

	if ((void *)(eth + 1) > data_end)
		return -1;
	h_proto = eth->h_proto;
	if (h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = data + off;

		if ((void *)(vlan + 1) > data_end)
			return -1;
		h_proto = vlan->h_vlan_encapsulated_proto;
		off += sizeof(*vlan);
	}
	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + off;
		int ihl;

		if ((void *)(iph + 1) > data_end)
			return -1;
		ihl = iph->ihl * 4;
		if (iph->version != 4 || ihl < (int)sizeof(*iph))
			return -1;
		*proto = iph->protocol;
		return off + ihl;
	}
	if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		*proto = ip6->nexthdr;
		return off + sizeof(*ip6);
	}
	return -2;
}

#endif
