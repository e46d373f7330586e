"""`speech serve`: starts the WebSocket service on the configured models and prints where to reach it."""

from __future__ import annotations

import argparse
import asyncio
import sys


def add_serve(subparsers) -> None:
    p = subparsers.add_parser("serve", help="the WebSocket audio service with a browser page",
                              description="Serves live ASR sessions over WebSocket (/ws), the web page (/), "
                              "/healthz, /readyz, /metrics and /v1/models. SIGINT or SIGTERM drains open "
                              "sessions, then stops.")
    p.add_argument("--config", help="server YAML (default: configs/server.yaml)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, help="port (default 8765; 0: any free port)")
    p.add_argument("--max-sessions", type=int, help="admission limit (default 64)")
    p.add_argument("--token", help="require this token (or set SPEECH_TOKEN)")
    p.add_argument("--threads", type=int, help="torch threads (default: every core)")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only in the JSON logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    import torch

    from .logs import configure_json_logs
    from .server import serve_until_stopped
    from .server_config import load_server_config

    try:
        config = load_server_config(args.config, host=args.host, port=args.port, max_sessions=args.max_sessions,
                                    token=args.token, threads=args.threads)
    except (ValueError, TypeError) as error:
        print(f"speech serve: {error}", file=sys.stderr)
        return 2
    configure_json_logs(logging.WARNING if args.quiet else logging.INFO)
    if config.threads:
        torch.set_num_threads(config.threads)

    def announce(server) -> None:
        print(f"speech serve: page {server.url}  WebSocket {server.ws_url}  "
              f"models {', '.join(server.service.engines)}", flush=True)

    try:
        asyncio.run(serve_until_stopped(config, announce))
    except (ValueError, OSError) as error:
        print(f"speech serve: {error}", file=sys.stderr)
        return 2
    return 0
