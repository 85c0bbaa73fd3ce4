"""`python -m devstack up|down|status|run`: the local stack in ./local (make up, make down)
and the multi-app run of dapr.yaml (make run)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from devstack.multiapp import run_multiapp
from devstack.processes import StackError
from devstack.stack import PROJECT_ROOT, Stack
from devstack.workflow_engine import WorkflowEngine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "run"])
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so `run` always stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = Stack(PROJECT_ROOT, api_tokens=os.environ.get("STATESTORE_API_TOKENS") == "1")
    try:
        if args.command == "up":
            stack.up()
            if stack.tokens:
                tokens = stack.run / "tokens.env"
                tokens.write_text(f"export DAPR_API_TOKEN={stack.tokens['DAPR_API_TOKEN']}\n")
                tokens.chmod(0o600)
                print(f"API tokens on: callers need DAPR_API_TOKEN (`source {tokens}`)")
            ports = stack.ports
            print(
                f"stack up: Redis 127.0.0.1:{ports.redis}; subscriber app :{ports.subscriber.app_port} "
                f"(sidecar HTTP {ports.subscriber.http_port}, gRPC {ports.subscriber.grpc_port}); "
                f"caller sidecar HTTP {ports.caller.http_port}, gRPC {ports.caller.grpc_port}. "
                f"Logs in {stack.logs}. `make down` stops it."
            )
        elif args.command == "down":
            stopped = stack.down() + WorkflowEngine(stack.local).stop()  # the engine of a killed `make run`
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.command == "run":
            return run_multiapp()
        else:
            running = stack.running()
            for proc in stack.processes():
                print(f"{proc.name:18} {'running' if proc in running else 'stopped'}")
            return 0 if len(running) == len(stack.processes()) else 3
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
