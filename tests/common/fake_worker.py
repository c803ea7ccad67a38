"""A worker for the protocol's tests: ``python -m tests.common.fake_worker JOB OUT``; ``job["do"]`` says how it ends."""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
from typing import Any

from quantbench.common.worker_protocol import mark_stage, worker_main


def _emit(path: str, **event: Any) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(event) + "\n")


def run(job: dict[str, Any]) -> Any:
    do = job["do"]
    if do == "double":
        return {"twice": job["x"] * 2, "path": job["path"]}
    if do == "nothing":
        return None
    if do == "raise":
        raise KeyError("missing")
    if do == "value":
        raise ValueError("calib_samples = 9, but there are 3\nsecond line")
    if do == "segv":
        print("about to crash", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if do == "exit":
        print("last words", flush=True)
        os._exit(3)
    if do == "hang":
        print("loading", flush=True)
        mark_stage("hanging")
        time.sleep(600)
    if do == "hang-after-result":
        atexit.register(time.sleep, 600)
        return {"measured": True}
    if do == "grow":
        block = bytearray(job["mib"] * 2**20)  # zero-filled, so touched
        return {"len": len(block)}
    if do == "nan":
        return {"value": float("nan")}
    if do == "nodes":  # a sensitivity-like job: each node is a progress event; "hang" nodes never end
        for node in job["nodes"]:
            if node in (job.get("skip") or []):
                continue
            _emit(job["progress"], event="start", node=node)
            if node.startswith("hang"):
                time.sleep(600)
            _emit(job["progress"], event="node", node=node, value=len(node))
        _emit(job["progress"], event="done")
        return None
    raise AssertionError(do)


if __name__ == "__main__":
    sys.exit(worker_main(run, allow_nan=os.environ.get("QB_FAKE_NAN") != "0"))
