"""The admin HTTP server: Prometheus metrics and health checks on the switch's own reactor.

``/healthz`` answers 200 while the process runs (a liveness probe: restart me if not);
``/readyz`` answers 200 only when every connector has a ready link (a readiness
probe: send me traffic), and its JSON body says which links are in which state, so
the operator sees *why* without opening the logs.
"""

from __future__ import annotations

import json
from typing import Callable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

ReadinessProbe = Callable[[], Mapping[str, Mapping[str, str]]]
"""Returns {connector: {link: state}}; a connector is ready when any link is "ready"."""


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _Health(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return b'{"status":"alive"}\n'


class _Ready(Resource):
    isLeaf = True

    def __init__(self, probe: ReadinessProbe) -> None:
        super().__init__()
        self.probe = probe

    def render_GET(self, request: Request) -> bytes:
        links = self.probe()
        unready = sorted(c for c, states in links.items() if "ready" not in states.values())
        ready = not unready
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        body = {"ready": ready, "connectors": links, "unready_connectors": unready}
        return json.dumps(body, sort_keys=True).encode() + b"\n"


def admin_site(registry: CollectorRegistry, probe: ReadinessProbe) -> Site:
    root = Resource()
    root.putChild(b"metrics", _Metrics(registry))
    root.putChild(b"healthz", _Health())
    root.putChild(b"readyz", _Ready(probe))
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
