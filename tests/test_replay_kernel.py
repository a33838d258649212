"""The sample captures replayed through the running kernel (one BPF_PROG_TEST_RUN per packet) and through
xdpsim's engines: the same outcome for every packet, the same bytes in every sink, the same maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kernel_fixtures import kernel  # noqa: F401 - fixture
from pipeline_expect import PCAPS, PROGRAMS, read_log
from pipeline_setup import build_pipeline_progs

from xdpsim.pipeline.replay import replay_to_dir

pytestmark = pytest.mark.usefixtures("kernel")


def _words_sum(values: list[str]) -> str:
    """Per-CPU values added up as u64 words (the kernel spreads packets over its CPUs as it likes)."""
    raw = [bytes.fromhex(v) for v in values]
    n = len(raw[0])
    out = bytearray()
    for off in range(0, n, 8):
        total = sum(int.from_bytes(r[off:off + 8], "little") for r in raw) & (1 << 64) - 1
        out += total.to_bytes(8, "little")[: min(8, n - off)]
    return out.hex()


def normal_maps(path: Path) -> dict:
    maps = json.loads(path.read_text())
    out = {}
    for name, m in maps.items():
        entries = {}
        for k, v in m["entries"].items():
            if m["type"] == "prog_array":
                entries[k] = "slot"  # program ids differ between the kernel and xdpsim
            elif isinstance(v, list):
                entries[k] = _words_sum(v)
            else:
                entries[k] = v
        out[name] = entries
    return out


def compare(tmp_path: Path, spec: str, capture: Path, engine: str = "jit") -> dict:
    outs = {}
    stats = {}
    for eng in ("kernel", engine):
        outs[eng] = tmp_path / eng
        stats[eng] = replay_to_dir(spec, capture, outs[eng], engine=eng, log=True)
    k, s = outs["kernel"], outs[engine]
    sim_log, kern_log = read_log(s), read_log(k)
    assert [(r["outcome"], r["length"]) for r in kern_log] == [(r["outcome"], r["length"]) for r in sim_log]
    assert stats["kernel"]["outcomes"] == stats[engine]["outcomes"]
    files = sorted(p.relative_to(s) for p in s.rglob("*.pcap") if "redirect" not in p.name)
    assert files == sorted(p.relative_to(k) for p in k.rglob("*.pcap") if "redirect" not in p.name)
    for f in files:
        assert (s / f).read_bytes() == (k / f).read_bytes(), f
    assert normal_maps(k / "maps.json") == normal_maps(s / "maps.json")
    return stats[engine]


@pytest.mark.parametrize("capture", ["mixed.pcap", "sll.pcap", "raw.pcap", "mixed.pcapng"])
def test_parser(tmp_path: Path, capture: str) -> None:
    stats = compare(tmp_path, str(PROGRAMS / "parser.o"), PCAPS / capture)
    assert stats["outcomes"]["drop"] and stats["outcomes"]["pass"]


@pytest.mark.parametrize("program", ["swap_tx", "encap_ipip", "decap_ipip", "trim_tail", "add_meta"])
def test_rewrite(tmp_path: Path, program: str) -> None:
    compare(tmp_path, f"{PROGRAMS}/rewrite.o:{program}", PCAPS / "mixed.pcap")


def test_rewrite_interp(tmp_path: Path) -> None:
    compare(tmp_path, f"{PROGRAMS}/rewrite.o:encap_ipip", PCAPS / "mixed.pcap", engine="interp")


@pytest.mark.parametrize("spec", ["icmp_echo.o", "calls.o", "firewall.o"])
def test_other_programs(tmp_path: Path, spec: str) -> None:
    capture = PCAPS / ("icmp.pcap" if spec == "icmp_echo.o" else "mixed.pcap")
    compare(tmp_path, str(PROGRAMS / spec), capture)


def test_chain(tmp_path: Path) -> None:
    toml = tmp_path / "chain.toml"
    toml.write_text(f"""
[[interface]]
name = "eth0"
xdp = [{{ object = "{PROGRAMS}/chain.o", program = "chain_count" }},
       {{ object = "{PROGRAMS}/chain.o", program = "chain_filter" }},
       {{ object = "{PROGRAMS}/chain.o", program = "chain_last" }}]
""")
    compare(tmp_path, str(toml), PCAPS / "mixed.pcap")


def test_queues_per_cpu(tmp_path: Path) -> None:
    """Several rx queues: the kernel runs each packet with its rx_queue_index on a device with that many
    queues; outcomes and per-CPU sums agree."""
    toml = tmp_path / "q.toml"
    toml.write_text(f'[[interface]]\nname = "eth0"\nifindex = 2\nqueues = 4\n'
                    f'xdp = [{{ object = "{PROGRAMS}/parser.o" }}]\n')
    compare(tmp_path, str(toml), PCAPS / "mixed.pcap")


def test_redirect_outcomes(tmp_path: Path) -> None:
    """The kernel does not say where a redirect went, but it is a redirect in both."""
    toml = tmp_path / "r.toml"
    toml.write_text(f"""
[[interface]]
name = "eth0"
xdp = [{{ object = "{PROGRAMS}/redirect.o", program = "redirect_map" }}]
[[interface]]
name = "eth1"
[[map_entries]]
map = "tx_ports"
key = "00000000"
value = "02000000"
""")
    stats = compare(tmp_path, str(toml), PCAPS / "mixed.pcapng")
    assert stats["outcomes"]["redirect"] > 0


@pytest.fixture(scope="module")
def kobj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/pipeline_progs.c built without the program the verifier refuses."""
    return build_pipeline_progs(tmp_path_factory, "p.o", kernel_safe=True)


def test_adjust_limits_as_the_kernel(tmp_path: Path, kobj: Path) -> None:
    """bpf_xdp_adjust_head/tail/meta at and past their limits (tests/pipeline_progs.c): same verdicts and
    bytes as the kernel's."""
    import struct

    from test_pipeline_limits import CASES, one_packet

    for n, (deltas, _length) in enumerate(CASES):
        case = tmp_path / f"case{n}"
        case.mkdir()
        entries = "".join(f'[[map_entries]]\nmap = "deltas"\nkey = "{k:02x}000000"\n'
                          f'value = "{struct.pack("<i", v).hex()}"\n' for k, v in enumerate(deltas))
        toml = case / "p.toml"
        toml.write_text(f'[[interface]]\nname = "eth0"\nxdp = [{{ object = "{kobj}", program = "adjust" }}]\n'
                        + entries)
        compare(case, str(toml), one_packet(case), engine="interp")


def test_frags_as_the_kernel(tmp_path: Path, kobj: Path) -> None:
    """Frames over 3520 bytes to an xdp.frags program: the kernel's multi-buffer test run agrees."""
    from test_pipeline import _long_capture

    path, _src = _long_capture(tmp_path)
    toml = tmp_path / "f.toml"
    toml.write_text(f'[[interface]]\nname = "eth0"\nxdp = [{{ object = "{kobj}", program = "frags" }}]\n')
    stats = compare(tmp_path, str(toml), path)
    assert stats["outcomes"]["tx"] == 1


def test_frame_too_long_and_too_short(tmp_path: Path) -> None:
    from test_pipeline import _long_capture

    path, _src = _long_capture(tmp_path)
    stats = compare(tmp_path, str(PROGRAMS / "parser.o"), path)
    assert stats["reasons"]["drop"] == {"frame_too_long": 1, "frame_too_short": 1}
