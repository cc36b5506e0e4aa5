"""The simulated bank's customer page, reduced to what a test or a demo needs.

``GET /pending`` lists payments waiting for the customer; ``POST /confirm/<ref>?decision=
approve|reject`` decides one, as the customer would by pressing a button on the bank's
page.  The decision travels to the switch as an advice (see `BankSim.confirm`); the
HTTP answer waits for the switch's acknowledgement.  ``GET /ledger`` shows the bank's
books (`Ledger.snapshot`: balances per account, every posting, anomaly counts; cards masked).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from switch.tools.banksim.server import BankSim

DECISIONS = {"approve": True, "reject": False}


def _json(request: Request, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode() + b"\n"


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

    def render_POST(self, request: Request) -> bytes | int:
        ref = b"/".join(request.postpath).decode("ascii", "replace")
        decision = request.args.get(b"decision", [b""])[0].decode("ascii", "replace")
        if decision not in DECISIONS:
            return _json(request, 400, {"error": "decision must be approve or reject"})
        try:
            acknowledged = self.sim.confirm(ref, approve=DECISIONS[decision])
        except KeyError:
            return _json(request, 404, {"error": f"no pending payment {ref!r}"})
        except ConnectionError as e:
            return _json(request, 503, {"error": str(e)})

        def done(code: str) -> None:
            request.write(_json(request, 200, {"ref": ref, "decision": decision, "acknowledged": code}))
            request.finish()

        acknowledged.addCallback(done)
        return NOT_DONE_YET


def customer_site(sim: BankSim) -> Site:
    root = Resource()
    root.putChild(b"pending", _Pending(sim))
    root.putChild(b"confirm", _Confirm(sim))
    root.putChild(b"ledger", _Ledger(sim))
    return Site(root)
