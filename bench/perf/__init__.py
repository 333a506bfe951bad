"""Performance benchmark: the harness measured side by side against the bare PyTorch loop.

* **round overhead** — one ``fedavg`` round (10 clients, 1 local epoch, ``conv3`` on ``fmnist``) through the engine,
  against a bare loop that runs the same SGD steps on the same batches with the same model (``load_state_dict``,
  SGD, sum of the exits' cross-entropy, a sample-weighted average), each client's two updates run side by side —
  target ≤ 1.05;
* **evaluation** — one forward pass per client plus a 100-threshold dynamic-inference sweep, against the same with
  one threshold — target ≤ 1.05;
* **memory** — RSS growth from 100 to 1,000 clients of ``fedper``, per client, against the bytes of one client's
  personal state — target ≤ 1.5 — for both the peak during the run and what is held after it (each size measured in
  fresh subprocesses; see :func:`~bench.perf.memory.memory_probe` and
  :func:`~bench.perf.memory.measure_memory`);
* **throughput** — training images per second of the harness and of the bare loop;
* **compiled** — the same round, side by side, by the harness with ``run.compile=true`` and with
  ``run.channels_last=true``, and by four variants of the bare loop: the model compiled (``torch.compile``;
  AOTAutograd compiles its backward with it), the whole training step compiled (the optimiser's step too), eager in
  ``channels_last`` memory format, and that compiled. The other figures run in the contiguous format
  (``run.channels_last=false``), so harness and bare loop compare like with like. Each against its eager twin:
  seconds a round, the speed-up, the first round's extra time (compiling) and the rounds the speed-up needs to repay
  it (``compiled=False``, ``cafebench perf --no-compile``, leaves them out).

``device`` (``cafebench perf --device cuda``) runs the round and evaluation figures on that device, with two more
figures on a GPU: how busy it was while the rounds trained (the mean of ``torch.cuda.utilization`` sampled every
50 ms; it needs ``pynvml``) — target ≥ 80% for ResNet-18 with batch 64 — and the peak GPU memory allocated. The
memory probe measures host RSS and runs with ``device`` ``cpu`` only.

Every figure is the median of ``repeats`` measurements.

The package, one job a module: :mod:`~bench.perf.loops` (the bare loops and the executor that runs them beside the
harness), :mod:`~bench.perf.timing` (clocks and GPU utilisation), :mod:`~bench.perf.memory` (the memory probe),
:mod:`~bench.perf.report` (the figures in words and JSON) and :mod:`~bench.perf.benchmark` (``run_perf``: every
figure).
"""
