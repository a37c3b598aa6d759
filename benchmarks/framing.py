"""Framing: CPU per task result of one signed message over TCP, packed payloads against a frame each.

Run from the repository root::

    python -m benchmarks.framing          # batches of 1, 10 and 250 results

A worker's ``Results`` message (and the manager's ``Tasks``) carries one
payload per task. The protocol joins small payloads into one frame with
their layout in the envelope (:mod:`hep_executor.engine._frames`); the
peer measured in the same run sends the same header and payloads with
one frame per payload, signed the same way. Each row sends a batch over a
ZeroMQ pair on 127.0.0.1, receives and unpacks it, and prints the process
CPU per result (median of 5), and the ratio peer / packed.
"""

from __future__ import annotations

import argparse
import json
import time

import zmq

from hep_executor.engine import pickle_bytes, protocol

from benchmarks._stats import median, print_table

_ITEM = {"id": 0, "status": "ok", "wall": 0.0, "cpu": 0.0, "peak_mb": 1.0, "compressed": False,
         "slot": "sim/0", "started": 0.0, "error": ""}


def _packed(key: bytes, items: list, payloads: list) -> list:
    return protocol.encode(protocol.Results(items), key, payloads)


def _frame_each(key: bytes, items: list, payloads: list) -> list:
    envelope = protocol.Envelope(protocol.NO_SESSION, 0, protocol.TO_MANAGER).pack()
    header = json.dumps({"op": "results", "items": items, "running": None}, separators=(",", ":")).encode()
    frames = [envelope, header, *payloads]
    return [protocol.sign_frames(key, b"", frames), *frames]


def _cpu_per_result(pair, build, unpack, batch: int, reps: int) -> float:
    sender, receiver = pair
    key = protocol.derive_key(b"k" * 32, protocol.new_session())
    items = [dict(_ITEM, id=i) for i in range(batch)]
    payloads = [pickle_bytes(None)] * batch
    t0 = time.process_time()
    for _ in range(reps):
        sender.send_multipart(build(key, items, payloads), copy=False)
        got = receiver.recv_multipart(copy=True)
        assert len(unpack(got)) == batch
    return (time.process_time() - t0) / (reps * batch) * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,10,250", help="results per message, comma-separated")
    parser.add_argument("--reps", type=int, default=5, help="repetitions; medians are reported (5)")
    args = parser.parse_args(argv)
    ctx = zmq.Context()
    sender, receiver = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    sender.bind("tcp://127.0.0.1:0")
    receiver.connect(sender.getsockopt(zmq.LAST_ENDPOINT))
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        n = max(200, 20_000 // batch)
        packed = median(_cpu_per_result((sender, receiver), _packed, protocol.payloads_of, batch, n)
                        for _ in range(args.reps))
        each = median(_cpu_per_result((sender, receiver), _frame_each, lambda f: f[3:], batch, n)
                      for _ in range(args.reps))
        rows.append([batch, each, packed, each / packed])
    sender.close(0)
    receiver.close(0)
    ctx.term()
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    print_table(f"framing: CPU us per result, median of {args.reps}; load average {load}",
                ["batch", "frame_each_us", "packed_us", "ratio"], rows)


if __name__ == "__main__":
    main()
