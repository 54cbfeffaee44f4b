"""Ray for one sweep: start a local Ray or join a cluster, shipping the config's plugin modules to its workers;
refuse a trial the cluster can never place; shut down only a Ray the sweep itself started."""

from __future__ import annotations

import os
import socket
import sys
import sysconfig
from pathlib import Path
from typing import Any, Optional, Sequence

from ..config import Config
from ..errors import PursuhintError


class RaySession:
    """The sweep's hold on Ray: ``start`` starts a local Ray (no ``address``) or joins the cluster at ``address``;
    ``close`` shuts Ray down only if ``start`` started it (a Ray already running in this process is left as it
    was). Also a context manager: ``with RaySession(...) as session:`` starts and closes."""

    def __init__(self, address: Optional[str], plugins: Sequence[str] = ()) -> None:
        self.address = address
        self.plugins = tuple(plugins)
        self.started = False  # True once this session started (or connected) Ray: it shuts it down again

    def check_local_resources(self, cfg: Config) -> None:
        """Before Ray starts: refuse a trial that a local Ray (every CPU core and visible GPU) could never place.
        Nothing to check yet when joining a cluster or a Ray already running."""
        import ray  # ray: deferred, as every import of it here (a module cheap to import)

        if not self.address and not ray.is_initialized():
            check_resources(cfg, total=local_resources())

    def check_resources(self, cfg: Config) -> None:
        """Once Ray runs: refuse a trial the cluster can never place; on a cluster (which may still scale up) warn."""
        check_resources(cfg, autoscaling=bool(self.address))

    def start(self) -> None:
        """Start a local Ray or connect to the cluster, shipping the config's plugin modules to its workers."""
        import ray  # ray: deferred

        if ray.is_initialized():
            self.started = False
            return
        address = self.address
        if address and address not in ("auto", "local") and "://" not in address:
            check_port(address)
        runtime_env = {"py_modules": shipped} if (shipped := plugin_modules(self.plugins)) else None
        try:
            if address:
                ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
            else:
                ray.init(address="local", include_dashboard=False, runtime_env=runtime_env)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise PursuhintError(f"cannot connect to the Ray cluster at {address!r} ({exc}); start it with "
                                 f"`ray start --head` or `ray up ray_cluster.yaml`, or drop --address "
                                 f"to run locally") from None
        self.started = True

    def close(self) -> None:
        """Shut Ray down if this session started it."""
        import ray  # ray: deferred

        if ray.is_initialized() and self.started:
            ray.shutdown()

    def __enter__(self) -> "RaySession":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def plugin_modules(plugins: Sequence[str]) -> list[Any]:
    """The plugin modules Ray must ship to its workers (each module's top-level package, or the module file):
    those the driver imported from a folder of the user's, not from an installed distribution."""
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    out: list[Any] = []
    for name in plugins:
        top = sys.modules.get(name.split(".")[0])
        where = getattr(top, "__file__", None)
        if top is None or where is None or top in out:
            continue
        if any(Path(where).resolve().is_relative_to(p) for p in installed) or top.__name__ == "pursuhint":
            continue
        out.append(top)
    return out


def head_node_id() -> str:
    """The Ray head node's id (the node that lives as long as the cluster), else the driver's node."""
    import ray  # ray: deferred

    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return node["NodeID"]
    return ray.get_runtime_context().get_node_id()


def check_port(address: str) -> None:
    """``host:port`` must answer within seconds; ray.init would otherwise retry for minutes."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            return
    except (OSError, ValueError) as exc:
        raise PursuhintError(f"cannot connect to the Ray cluster at {address!r} ({exc}); start it with "
                             f"`ray start --head` or `ray up ray_cluster.yaml`, or drop --address "
                             f"to run locally") from None


def local_resources() -> dict[str, float]:
    """What a local Ray started by this process will have: every CPU core and every visible GPU."""
    import torch  # torch: deferred (a module cheap to import)

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_resources(cfg: Config, autoscaling: bool = False, total: Optional[dict[str, float]] = None) -> None:
    """A trial asking for more than the cluster has would wait forever: refuse it on a local Ray; on a
    remote cluster (which may still be scaling up from zero workers) warn instead."""
    import ray  # ray: deferred

    want = cfg.search.resources_per_trial
    total = ray.cluster_resources() if total is None else total
    for kind, need in (("CPU", want.cpu), ("GPU", want.gpu)):
        have = total.get(kind, 0)
        if need > have:
            msg = (f"search.resources_per_trial asks for {need:g} {kind} per trial but the Ray cluster has "
                   f"{have:g}")
            if not autoscaling:
                raise PursuhintError(f"{msg}; lower it (fractions share a GPU) or add nodes")
            print(f"pursuhint: warning: {msg} now; trials wait until the autoscaler adds nodes", file=sys.stderr)
