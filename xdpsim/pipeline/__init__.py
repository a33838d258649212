"""The pipeline: interfaces, their XDP chains, verdict routing, sinks and statistics (`xdpsim run`).

- `config.py`: the pipeline file (TOML) and `prog.o[:NAME]` -> PipelineSpec (plain data).
- `dispatcher.py`: libxdp's dispatcher (run-priority order, chain_call_actions, off the end = PASS)
  and the choice of an object's entry program.
- `backends.py`: where programs run: SimBackend (interp, jit: one Runtime) or KernelBackend (the
  running kernel, BPF_PROG_TEST_RUN); map_entries, maps.json, ring buffer / perf records.
- `pipeline.py`: `Pipeline(spec, engine, seed, budget)`: loads everything, `process(iface, frame,
  now_ns, queue) -> Decision`, `send(iface, frame, now_ns) -> Decision`, `redirect(...)`,
  `interface_for(capture_interface)`.
- `routing.py`: `Decision(outcome, reason, data, target, program, error, result, ran, stages, clones,
  interface)`, `decide()`.
- `tc_chain.py`: tcx then clsact on one packet (`run_stage`), `FilterList`, `follow_redirects`.
- `tc_stage.py`: TC in the pipeline: XDP PASS -> TC ingress -> host, host (`host_pcap`,
  `Pipeline.send`) -> TC egress -> wire, TC redirects and clones, the redirect loop limit.
- `fib.py`: bpf_fib_lookup from `[[route]]` and `[[neighbour]]`.
- `rss.py`: Toeplitz RSS over rx queues.
- `replay.py`: `Replay(pipeline, sinks, log=)` over a capture (batches, monotonic clock, damaged
  records as outcomes) and `replay_to_dir(spec, pcap, out, ...) -> stats dict`.
- `fastpath.py`: the JIT's native batch path of a replay.
- `sinks.py`, `stats.py`, `report.py`: output files, statistics (outcomes and reasons), the summary.
"""
