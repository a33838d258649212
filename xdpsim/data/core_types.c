/*
 * core_types.c: the kernel types xdpsim resolves CO-RE relocations against when the running
 * system has no /sys/kernel/btf/vmlinux. Only the uapi networking headers and BPF context types
 * are needed: their layouts are the kernel's ABI, so they match every vmlinux.
 *
 * Regenerate core_types.btf with `make -C programs core-btf` (clang-19 and llvm-objcopy): the
 * object's .BTF section, extracted as is.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/pkt_cls.h>

/* kernel-internal (include/linux/if_vlan.h) */
struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

/* One variable of each type makes clang emit its BTF. */
struct ethhdr core_ethhdr;
struct vlan_hdr core_vlan_hdr;
struct iphdr core_iphdr;
struct ipv6hdr core_ipv6hdr;
struct tcphdr core_tcphdr;
struct udphdr core_udphdr;
struct icmphdr core_icmphdr;
struct icmp6hdr core_icmp6hdr;
struct xdp_md core_xdp_md;
struct __sk_buff core_sk_buff;
struct bpf_sock core_bpf_sock;
struct bpf_devmap_val core_devmap_val;
struct bpf_cpumap_val core_cpumap_val;
enum xdp_action core_xdp_action;
enum bpf_map_type core_map_type;
enum bpf_func_id core_func_id;
__u32 core_tc_act = TC_ACT_OK;
