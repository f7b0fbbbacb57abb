"""Engines that parakit did not start: an ipcluster started here (as an sbatch script would),
then a Session attached to it by profile and cluster id. Each engine pins itself to its own
host's GPU by local rank (the path engines on other hosts take). Prints what each rank got.

    python benchmarks/attach_check.py [--engines 1]
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import ipyparallel as ipp

import parakit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as profile:
        cluster = ipp.Cluster(n=args.engines, profile_dir=profile, cluster_id="attach-check",
                              controller_ip="127.0.0.1", log_level=logging.WARNING)
        cluster.start_cluster_sync()
        try:
            with parakit.Session(args.engines, engines="attach", profile=profile, cluster_id="attach-check",
                                 runs_dir=f"{profile}/runs", progress=False) as s:
                for row in s.status():
                    print("engine", {k: row[k] for k in ("rank", "host", "local_rank", "device", "device_name")})
                strategy = "ddp" if args.engines > 1 else "single"
                r = s.run(model="gpt", strategy=strategy, workers=args.engines, steps=8, batch_size=16)
                print("run", r.status, r.error, "backend", r.backend, "devices", r.device_names,
                      "gpu_index", [x.gpu_index for x in r.ranks], "step ms", round(r.summary["step_time_s"] * 1e3, 2),
                      "network", r.network)
            print("attached cluster still has", len(cluster.connect_client_sync().ids), "engine(s)")
        finally:
            cluster.stop_cluster_sync()


if __name__ == "__main__":
    main()
