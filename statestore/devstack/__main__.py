"""`python -m statestore.devstack up|down|status|run|install`: the stack in ./local (make up, make down),
the multi-app run of dapr.yaml (make run), and installing a profile's servers (setup).

`--profile` (default: $PROFILE, else local) picks the profile for up and install; down and
status act on whichever profile `up` started. `up --temporal` also starts a Temporal dev
server and the Temporal example's worker; `run --engine temporal` runs the Temporal example."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from statestore.devstack.multiapp import run_multiapp
from statestore.devstack.processes import StackError
from statestore.devstack.servers import PROFILES, get_profile
from statestore.devstack.stack import PROJECT_ROOT, RUNTIME, Stack
from statestore.devstack.temporal import TemporalStack, run_temporal
from statestore.devstack.workflow_engine import WorkflowEngine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m statestore.devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "run", "install"])
    parser.add_argument("--profile", choices=list(PROFILES), default=os.environ.get("PROFILE") or "local")
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("REPLICAS") or 0) or None,
                        help="subscriber replicas (default: the profile's; $REPLICAS)")
    parser.add_argument("--temporal", action="store_true", help="up: also a Temporal dev server and the example worker")
    parser.add_argument("--engine", choices=["dapr", "temporal"], default="dapr", help="run: which example to run")
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            for server in get_profile(args.profile).servers:
                server.install(RUNTIME)
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    # SIGTERM unwinds like Ctrl-C, so `run` always stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    profile = args.profile
    started = PROJECT_ROOT / "local" / "run" / "profile"
    running_profile = started.read_text().strip() if started.exists() else None
    if args.command in ("down", "status"):  # the profile that `up` started
        profile = running_profile or profile
    elif args.command == "up" and running_profile not in (None, profile):
        if Stack(PROJECT_ROOT, profile=running_profile).running():
            print(f"error: a stack of profile {running_profile} is running: `make down` stops it, and"
                  f" `make up PROFILE={running_profile}` starts what stopped in it.", file=sys.stderr)  # fmt: skip
            return 1
    stack = Stack(
        PROJECT_ROOT,
        api_tokens=os.environ.get("STATESTORE_API_TOKENS") == "1",
        profile=profile,
        replicas_wanted=args.replicas,
    )
    temporal = TemporalStack(stack)
    try:
        if args.command == "up":
            running = stack.running()
            if running and len(running) < len(stack.processes()):  # start what stopped
                print(f"started again: {', '.join(stack.resume())}. `make status` shows the stack.")
                return 0
            stack.up()
            if args.temporal:
                try:
                    temporal.up()
                except BaseException:
                    stack.down()
                    raise
            if stack.tokens:
                tokens = stack.run / "tokens.env"
                tokens.write_text(f"export DAPR_API_TOKEN={stack.tokens['DAPR_API_TOKEN']}\n")
                tokens.chmod(0o600)
                print(f"API tokens on: callers need DAPR_API_TOKEN (`source {tokens}`)")
            ports = stack.ports
            servers = ", ".join(f"{s.label} 127.0.0.1:{s.main_port}" for s in stack.servers.values())
            print(
                f"stack up (profile {stack.profile.name}): {servers}; "
                f"{len(stack.subscriber_pairs())} subscriber replica(s), the first on :{ports.subscriber.app_port} "
                f"(sidecar HTTP {ports.subscriber.http_port}, gRPC {ports.subscriber.grpc_port}; "
                f"metrics and health on :{ports.subscriber.app_metrics_port}); "
                f"caller sidecar HTTP {ports.caller.http_port}, gRPC {ports.caller.grpc_port}. "
                f"Logs in {stack.logs}. `make down` stops it."
            )
            if args.temporal:
                print(f"Temporal dev server {temporal.address} (data in {temporal.folder}); "
                      f"example worker with its sidecar on gRPC {temporal.ports.worker.grpc_port}.")
        elif args.command == "down":
            stopped = temporal.down() + stack.down() + WorkflowEngine(stack.local).stop()  # the engine of a killed `make run`
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.command == "run":
            return run_temporal() if args.engine == "temporal" else run_multiapp()
        else:
            running = stack.running()
            for proc in stack.processes():
                print(f"{proc.name:18} {'running' if proc in running else 'stopped'}")
            for proc in temporal.processes():  # only when started with --temporal
                if proc.alive():
                    print(f"{proc.name:18} running")
            problems = stack.problems() if running else []
            for problem in problems:
                print(f"! {problem}")
            return 0 if len(running) == len(stack.processes()) and not problems else 3
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
