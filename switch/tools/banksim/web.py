"""The simulated bank's customer page, reduced to what a test or a demo needs.

``GET /confirm/<ref>`` (the confirmation URL the switch hands to the web tier) is the page a
customer opens in a browser: the pending payment (masked card or account, amount and currency,
merchant) with Approve and Reject buttons, each a POST form.  ``POST /confirm/<ref>?decision=
approve|reject`` decides it, from that page or from a test or script; the decision travels to
the switch as an advice (see `BankSim.confirm`) and the answer waits for the switch's
acknowledgement: JSON, or an HTML page when the client asks for HTML (a browser does).
``GET /pending`` lists payments waiting for the customer; ``GET /ledger`` shows the bank's
books (`Ledger.snapshot`: balances per account, every posting, anomaly counts; cards masked).
``POST /cutover`` ends the bank's business day and tells the switch (0800/201, 1804/821;
answered with the switch's response code); ``GET /day?date=YYYY-MM-DD`` shows the open date,
the dates closed, and the bank's totals of a date per currency (default: the open one).
"""

from __future__ import annotations

import json
from datetime import date
from html import escape
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from switch.domain.currency import by_numeric
from switch.tools.banksim.issuer import PendingConfirmation, instrument_id
from switch.tools.banksim.ledger import mask_number
from switch.tools.banksim.server import BankSim

DECISIONS = {"approve": True, "reject": False}


def _json(request: Request, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode() + b"\n"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;max-width:32em;margin:2em auto}} dt{{color:#555}}
dd{{margin:0 0 .8em 0;font-size:1.2em}} button{{font-size:1.1em;padding:.5em 1.5em;margin-right:1em}}</style>
</head><body><h1>{title}</h1>
{body}
</body></html>
"""


def _html(request: Request, code: int, title: str, body: str) -> bytes:
    """A page; ``title`` is escaped here, ``body`` must already be."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    return _PAGE.format(title=escape(title), body=body).encode()


def _wants_html(request: Request) -> bool:
    return b"text/html" in (request.getHeader(b"accept") or b"")


def _amount(request: dict[str, str]) -> str:
    """``12.50 USD`` from fields 4 and 49; minor units when the currency is missing or unknown."""
    currency = by_numeric(request.get("49", ""))
    amount = int(request.get("4", "0") or 0)
    return currency.format(amount) if currency else f"{amount} (minor units, currency {request.get('49', '?')})"


def _merchant(request: dict[str, str]) -> str:
    """The card acceptor's name and location (field 43) and its id (field 42), as the bank saw them."""
    name = " ".join(request.get("43", "").split())
    merchant_id = request.get("42", "").strip()
    return f"{name} ({merchant_id})" if name and merchant_id else name or merchant_id or "unknown merchant"


def _confirmation_page(sim: BankSim, request: Request, pending: PendingConfirmation) -> bytes:
    message = pending.request
    ref = escape(pending.ref)
    number = instrument_id(message)
    rows = (("Merchant", _merchant(message)), ("Amount", _amount(message)),
            ("Card or account", mask_number(number) if number else "unknown"), ("Reference", pending.ref))
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    buttons = "".join(f'<button type="submit" name="decision" value="{d}">{d.capitalize()}</button>' for d in DECISIONS)
    form = f'<form method="post" action="/confirm/{ref}">{buttons}</form>'
    return _html(request, 200, f"{sim.options.name}: confirm your payment", f"<dl>{details}</dl>\n{form}")


def _result_page(request: Request, code: int, body: dict[str, str]) -> bytes:
    """What a browser shows after pressing a button: the outcome, or what went wrong."""
    if "error" in body:
        return _html(request, code, "Not done", f"<p>{escape(body['error'])}</p>")
    done = "approved" if body["decision"] == "approve" else "rejected"
    return _html(request, code, f"Payment {done}", f"<p>You {done} payment {escape(body['ref'])}; "
                 "the shop has been told. You can close this page.</p>")


class _Pending(Resource):
    isLeaf = True

    def __init__(self, sim: BankSim) -> None:
        super().__init__()
        self.sim = sim

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"pending": self.sim.pending()})


class _Ledger(Resource):
    isLeaf = True

    def __init__(self, sim: BankSim) -> None:
        super().__init__()
        self.sim = sim

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, self.sim.ledger.snapshot())


class _Confirm(Resource):
    isLeaf = True

    def __init__(self, sim: BankSim) -> None:
        super().__init__()
        self.sim = sim

    def render_GET(self, request: Request) -> bytes:
        ref = b"/".join(request.postpath).decode("ascii", "replace")
        pending = self.sim.issuer.pending.get(ref)
        if pending is None:
            return _html(request, 404, "No pending payment", f"<p>No payment {escape(ref)} is waiting for your "
                         "decision: it was decided already, it expired, or the bank restarted.</p>")
        return _confirmation_page(self.sim, request, pending)

    def render_POST(self, request: Request) -> bytes | int:
        ref = b"/".join(request.postpath).decode("ascii", "replace")
        decision = request.args.get(b"decision", [b""])[0].decode("ascii", "replace")
        answer = _result_page if _wants_html(request) else _json
        if decision not in DECISIONS:
            return answer(request, 400, {"error": "decision must be approve or reject"})
        try:
            acknowledged = self.sim.confirm(ref, approve=DECISIONS[decision])
        except KeyError:
            return answer(request, 404, {"error": f"no pending payment {ref!r}"})
        except ConnectionError as e:
            return answer(request, 503, {"error": str(e)})

        def done(code: str) -> None:
            request.write(answer(request, 200, {"ref": ref, "decision": decision, "acknowledged": code}))
            request.finish()

        acknowledged.addCallback(done)
        return NOT_DONE_YET


class _Cutover(Resource):
    isLeaf = True

    def __init__(self, sim: BankSim) -> None:
        super().__init__()
        self.sim = sim

    def render_POST(self, request: Request) -> bytes | int:
        try:
            acknowledged = self.sim.cutover()
        except ConnectionError as e:
            return _json(request, 503, {"error": str(e)})
        closed, opened = self.sim.day.closed[-1], self.sim.day.business_date

        def done(code: str) -> None:
            request.write(_json(request, 200, {"closed": closed, "opened": opened, "acknowledged": code}))
            request.finish()

        acknowledged.addCallback(done)
        return NOT_DONE_YET


class _Day(Resource):
    isLeaf = True

    def __init__(self, sim: BankSim) -> None:
        super().__init__()
        self.sim = sim

    def render_GET(self, request: Request) -> bytes:
        day = request.args.get(b"date", [self.sim.day.business_date.encode()])[0].decode("ascii", "replace")
        try:
            date.fromisoformat(day)
        except ValueError:
            return _json(request, 400, {"error": f"date must be YYYY-MM-DD, got {day!r}"})
        return _json(request, 200, {"business_date": self.sim.day.business_date, "closed": self.sim.day.closed,
                                    "date": day, "totals": self.sim.day.totals(day)})


def customer_site(sim: BankSim) -> Site:
    root = Resource()
    root.putChild(b"pending", _Pending(sim))
    root.putChild(b"confirm", _Confirm(sim))
    root.putChild(b"ledger", _Ledger(sim))
    root.putChild(b"cutover", _Cutover(sim))
    root.putChild(b"day", _Day(sim))
    return Site(root)
