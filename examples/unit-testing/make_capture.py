"""Write capture.pcap, the example's traffic (scapy, fixed timestamps: the same bytes every run).

    python make_capture.py
"""

import logging

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def eth() -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def frames() -> list:
    out = []
    for sport, dport in [(40000, 80), (40001, 443), (40002, 23), (40003, 22), (40004, 8080)]:
        out.append(eth() / IP(src=CLIENT, dst=SERVER) / TCP(sport=sport, dport=dport, flags="S"))
        out.append(eth() / IP(src=SERVER, dst=CLIENT) / TCP(sport=dport, dport=sport, flags="SA"))
    out.append(eth() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40005, dport=80, flags="PA")
               / Raw(b"GET / HTTP/1.0\r\n\r\n"))
    for dport in (53, 19, 123, 5353):
        out.append(eth() / IP(src=CLIENT, dst=SERVER) / UDP(sport=5000, dport=dport) / Raw(b"x" * 12))
    out.append(eth() / IP(src=CLIENT, dst=SERVER, options=b"\x01\x01\x01\x00") / TCP(sport=40006, dport=23))
    out.append(eth() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=1, seq=1))
    out.append(eth() / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=40007, dport=23))
    out.append(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=CLIENT, pdst=SERVER))
    # malformed: a runt, a cut IPv4 header, a cut TCP header, IHL 4
    out.append(Raw(bytes(eth())[:10]))
    out.append(Raw(bytes(eth() / IP(src=CLIENT, dst=SERVER) / TCP(dport=80))[:24]))
    out.append(Raw(bytes(eth() / IP(src=CLIENT, dst=SERVER) / TCP(dport=80))[:40]))
    out.append(eth() / IP(src=CLIENT, dst=SERVER, ihl=4) / UDP(dport=53))
    for i, p in enumerate(out):
        p.time = 1_700_000_000 + i / 1000
    return out


if __name__ == "__main__":
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # the runts are Raw, not Ether: fine
    wrpcap("capture.pcap", frames(), linktype=1)  # Ethernet, the runts included
