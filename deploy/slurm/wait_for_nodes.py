"""Wait until a Ray cluster has ``--nodes`` live nodes (used by deploy/slurm/search.sbatch).

Prints one line naming the joined nodes and exits 0; or prints one ``error:`` line and exits 1
when the time is up, or at once when a watched process (a node's ``srun ... ray start`` step)
ends before the cluster is complete.

    python wait_for_nodes.py --address 10.0.0.1:6379 --nodes 4 --timeout 300 \
        --watch node1=1234 --watch node2=1240
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

PREFIX = "scitune-slurm:"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a step that ended but was not yet reaped by its parent shell is a zombie: gone too
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def describe(nodes: list[dict]) -> str:
    parts = []
    for n in nodes:
        res = n.get("Resources", {})
        parts.append(f"{n.get('NodeManagerHostname', '?')} ({n.get('NodeManagerAddress', '?')}, "
                     f"node {n.get('NodeID', '?')[:8]}, {res.get('CPU', 0):g} CPU, "
                     f"{res.get('GPU', 0):g} GPU)")
    return ", ".join(parts)


def not_joined(watched: list[tuple[str, int]], joined: list[dict]) -> str:
    """The watched node names with no joined node of that host name (short names compared);
    when host names do not tell them apart (several nodes on one host), how many are missing."""
    hosts = [str(n.get("NodeManagerHostname", "")).split(".")[0] for n in joined]
    missing = [name for name, _ in watched if name.split(".")[0] not in hosts]
    if len(missing) == len(watched) - len(joined):
        return ", ".join(missing) or "none"
    names = " ".join(name for name, _ in watched)
    return f"{max(len(watched) - len(joined), 0)} of {names}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="HEAD_IP:PORT of the Ray head")
    p.add_argument("--nodes", type=int, required=True, help="live nodes to wait for")
    p.add_argument("--timeout", type=float, default=300, help="seconds (300)")
    p.add_argument("--watch", action="append", default=[], metavar="NODE=PID",
                   help="fail at once when this node's step process ends")
    args = p.parse_args(argv)
    watched = [(name, int(pid)) for name, _, pid in (w.partition("=") for w in args.watch)]

    deadline = time.monotonic() + args.timeout
    joined: list[dict] = []
    connected = False
    error = None
    while True:
        ended = [f"{name} (srun pid {pid})" for name, pid in watched if not alive(pid)]
        if ended:
            error = (f"the Ray step on {', '.join(ended)} ended before all {args.nodes} nodes "
                     f"joined ({len(joined)} had); its output is above in this log")
            break
        if not connected and answers(args.address):
            import ray

            try:
                ray.init(address=args.address, logging_level="ERROR", log_to_driver=False,
                         include_dashboard=False)
                connected = True
            except Exception as exc:  # the head is still starting: try again
                last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if time.monotonic() > deadline:
                    error = f"cannot connect to the Ray head at {args.address}: {last}"
                    break
        if connected:
            import ray

            joined = [n for n in ray.nodes() if n.get("Alive")]
            if len(joined) >= args.nodes:
                print(f"{PREFIX} {len(joined)} of {args.nodes} Ray nodes joined: {describe(joined)}",
                      flush=True)
                ray.shutdown()
                return 0
        if time.monotonic() > deadline:
            if not connected:
                error = (f"no Ray head answered at {args.address} within {args.timeout:g} s; "
                         "check the head's lines above in this log and RAY_HEAD_IP/RAY_PORT")
            else:
                error = (f"only {len(joined)} of {args.nodes} Ray nodes joined within "
                         f"{args.timeout:g} s (joined: {describe(joined) or 'none'}; "
                         f"not joined: {not_joined(watched, joined)}); check those nodes' lines "
                         "in this log, the ports between nodes and RAY_AUTH_MODE")
            break
        time.sleep(1)
    if connected:
        import ray

        ray.shutdown()
    print(f"{PREFIX} error: {error}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
