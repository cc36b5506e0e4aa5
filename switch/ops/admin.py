"""The admin HTTP server: Prometheus metrics and health checks on the switch's own reactor.

``/healthz`` answers 200 while the process runs (a liveness probe: restart me if not);
``/readyz`` answers 200 only when every connector has a ready link (a readiness
probe: send me traffic), and its JSON body says which links are in which state, so
the operator sees *why* without opening the logs.

``/reports/settlement?date=YYYY-MM-DD&format=json|csv[&bank=B|&merchant=M]`` serves the
settlement report (`switch.ops.reports`) behind the admin server's access rule for operator
endpoints (`operator_allowed`: loopback or Unix-socket clients only; 403 for anyone else):
it shows the business's money. Each report served is logged.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Awaitable, Callable, Mapping

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from switch.domain.settlementfile import parse_date
from switch.observe import logs
from switch.ops.reports.build import SettlementReport, UnknownBank
from switch.ops.reports.render import CONTENT_TYPES, render

log = structlog.get_logger("kswitch.admin")

ReadinessProbe = Callable[[], Mapping[str, Mapping[str, str]]]
"""Returns {connector: {link: state}}; a connector is ready when any link is "ready"."""
ReportSource = Callable[[str | None, str | None, str | None], Awaitable[SettlementReport | None]]
"""(business date or None for the default, bank, merchant) -> the settlement report; None with no business
day; fails with UnknownBank."""
REPORT_FORMATS = ("json", "csv")
CutoverAction = Callable[[str | None], "Deferred[list[dict[str, Any]]]"]
"""Cut over one connector (its name) or every one (None); fires with one result per connector, or fails
with `OperatorError`."""


class OperatorError(Exception):
    """An operator action refused: ``status`` is the HTTP code (404 unknown bank, 409 refused now)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, sort_keys=True).encode() + b"\n"


def operator_allowed(request: Request) -> bool:
    """Loopback or Unix socket: the admin server's access rule for actions that change anything."""
    peer = request.getClientAddress()
    if isinstance(peer, UNIXAddress):
        return True
    if isinstance(peer, (IPv4Address, IPv6Address)):
        return ipaddress.ip_address(peer.host.split("%")[0]).is_loopback
    return False


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


class _SettlementReport(Resource):
    isLeaf = True

    def __init__(self, source: ReportSource) -> None:
        super().__init__()
        self.source = source

    def render_GET(self, request: Request) -> bytes | int:
        if not operator_allowed(request):
            return _json(request, 403, {"error": "reports are served to loopback and Unix-socket clients only"})
        args = {k.decode("ascii", "replace"): v[-1].decode("utf-8", "replace") for k, v in request.args.items()}
        unknown = sorted(set(args) - {"date", "format", "bank", "merchant"})
        fmt = args.get("format", "json")
        if unknown:
            return _json(request, 400, {"error": f"unknown parameter {unknown[0]!r}; expected date, format, bank "
                                                 "or merchant"})
        if fmt not in REPORT_FORMATS:
            return _json(request, 400, {"error": f"format: expected json or csv, got {fmt!r}"})
        if "bank" in args and "merchant" in args:
            return _json(request, 400, {"error": "bank and merchant: expected at most one of them"})
        try:
            date = parse_date(args["date"]) if "date" in args else None
        except ValueError as e:
            return _json(request, 400, {"error": f"date: {e}"})
        log.info("admin_report", report="settlement", date=date, format=fmt, bank=args.get("bank"),
                 merchant=args.get("merchant"))

        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)  # the client may leave before the report is ready

        def done(report: SettlementReport | None) -> None:
            if gone:
                return
            if report is None:
                body = _json(request, 404, {"error": "the journal has no business day yet: give date"})
            else:
                request.setHeader(b"content-type", CONTENT_TYPES[fmt].encode())
                body = render(report, fmt)
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            if not failure.check(UnknownBank):
                logs.failed(log, "admin_report_failed", failure)
            if gone:
                return
            if failure.check(UnknownBank):
                body = _json(request, 400, {"error": f"bank: {failure.getErrorMessage()}"})
            else:
                body = _json(request, 500, {"error": "the report could not be built; see the switch's log"})
            request.write(body)
            request.finish()

        ensureDeferred(self.source(date, args.get("bank"), args.get("merchant"))).addCallbacks(done, failed)
        return NOT_DONE_YET


class _Cutover(Resource):
    isLeaf = True

    def __init__(self, action: CutoverAction) -> None:
        super().__init__()
        self.action = action

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return _json(request, 405, {"error": "a cutover is a POST"})

    def render_POST(self, request: Request) -> bytes | int:
        if not operator_allowed(request):
            return _json(request, 403, {"error": "operator actions are served to loopback and Unix-socket clients "
                                                 "only"})
        bank = request.args.get(b"bank", [b""])[0].decode("utf-8", "replace") or None
        every = request.args.get(b"all", [b""])[0] in (b"1", b"true")
        if (bank is None) == (not every):
            return _json(request, 400, {"error": "give bank=NAME or all=1"})
        done = self.action(bank)
        gone: list[bool] = []  # the operator gave up waiting: the cutover goes on, nobody to answer
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def reply(status: int, body: dict[str, Any]) -> None:
            if not gone:
                request.write(_json(request, status, body))
                request.finish()

        def refused(failure: Failure) -> None:
            if isinstance(failure.value, OperatorError):
                reply(failure.value.status, {"error": failure.getErrorMessage()})
                return
            log.error("operator_action_failed", action="cutover", bank=bank, error=failure.getErrorMessage(),
                      error_type=failure.type.__name__)
            reply(500, {"error": "cutover failed; see the switch's operator_action_failed log event"})

        done.addCallbacks(lambda results: reply(200, {"results": results}), refused)
        return NOT_DONE_YET


def admin_site(registry: CollectorRegistry, probe: ReadinessProbe, cutover: CutoverAction | None = None,
               reports: ReportSource | None = None) -> Site:
    root = Resource()
    root.putChild(b"metrics", _Metrics(registry))
    root.putChild(b"healthz", _Health())
    root.putChild(b"readyz", _Ready(probe))
    if cutover is not None:
        root.putChild(b"cutover", _Cutover(cutover))
    if reports is not None:
        folder = Resource()
        folder.putChild(b"settlement", _SettlementReport(reports))
        root.putChild(b"reports", folder)
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
