#!/usr/bin/env python3
"""A minimal OTLP/gRPC trace receiver for tests and demos.

Implements opentelemetry.proto.collector.trace.v1.TraceService/Export with the official
Python `opentelemetry-proto` definitions and `grpcio`, and prints every received span as
one JSON line on stdout:

    {"service": "waypoint.production", "trace_id": "4bf9...", "span_id": "...",
     "parent_span_id": "...", "name": "...", "kind": "SPAN_KIND_SERVER",
     "attributes": {"user_id": "42", ...}}

Setup:   pip install opentelemetry-proto grpcio
Usage:   otlp-receiver.py [--listen 127.0.0.1:4317] [--max-seconds N]
The first line on stdout is `listening <host:port>` (useful with port 0).
"""

import argparse
import json
import sys
import threading
import time
from concurrent import futures

try:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )
    from opentelemetry.proto.trace.v1 import trace_pb2
except ImportError as e:  # pragma: no cover - environment problem, reported clearly
    sys.exit(f"otlp-receiver: {e}; install with: pip install opentelemetry-proto grpcio")


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind in ("array_value", "kvlist_value"):
        return str(getattr(v, kind))
    return getattr(v, kind)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        lines = []
        for rs in request.resource_spans:
            attrs = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
            service = attrs.get("service.name", "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(
                        json.dumps(
                            {
                                "service": service,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent_span_id": s.parent_span_id.hex(),
                                "name": s.name,
                                "kind": trace_pb2.Span.SpanKind.Name(s.kind),
                                "attributes": {
                                    kv.key: any_value(kv.value) for kv in s.attributes
                                },
                            },
                            sort_keys=True,
                        )
                    )
        with self.lock:
            for line in lines:
                print(line, file=self.out)
            self.out.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:4317", help="host:port (port 0: any)")
    p.add_argument("--max-seconds", type=float, default=0, help="exit after N seconds (0: never)")
    a = p.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(sys.stdout), server)
    host = a.listen.rsplit(":", 1)[0]
    port = server.add_insecure_port(a.listen)
    if port == 0:
        sys.exit(f"otlp-receiver: cannot listen on {a.listen}")
    server.start()
    print(f"listening {host}:{port}", flush=True)
    try:
        if a.max_seconds > 0:
            time.sleep(a.max_seconds)
        else:
            server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    server.stop(grace=1)


if __name__ == "__main__":
    main()
