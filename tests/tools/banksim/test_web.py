"""The customer's confirmation page over a real socket: the URL the switch hands to the web tier
opens in a browser (GET), shows the pending payment with Approve and Reject buttons, and the
button's POST completes the payment through the switch.  The JSON POST API keeps working."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from io import BytesIO
from urllib.parse import urljoin

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from switch.tools.banksim.web import customer_site
from tests.e2e.harness import PLUGIN_BANKS, PLUGIN_ROUTES, authorize, eventually, start_env, stop_env

CONFIRM_CARD = "5200000000001005"  # Sakura's test card whose payments wait for the customer
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class Forms(HTMLParser):
    """Each form's method and action, and the name=value of each of its submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"method": (a.get("method") or "get").lower(), "action": a.get("action"), "buttons": []})
        elif tag == "button" and self.forms and a.get("type", "submit") == "submit":
            self.forms[-1]["buttons"].append((a.get("name"), a.get("value")))  # type: ignore[union-attr]


async def http(method: str, url: str, accept: str | None = None, form: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of one request; ``form`` is sent as a browser sends a form."""
    headers = Headers({b"accept": [accept.encode()]} if accept else {})
    body = None
    if form is not None:
        headers.addRawHeader(b"content-type", b"application/x-www-form-urlencoded")
        body = FileBodyProducer(BytesIO(form.encode()))
    response = await Agent(reactor).request(method.encode(), url.encode(), headers, body)
    content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode()
    return response.code, content_type, (await readBody(response)).decode()


@pytest_twisted.async_yield_fixture
async def bank(tmp_path):
    """The demo's two banks behind a real switch; Sakura's customer site on a port of its own."""
    env = await start_env(tmp_path, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES,
                          connector_extra="confirmation_timeout = 60")
    sim = env.sims["bank_b"]
    site = reactor.listenTCP(0, customer_site(sim), interface="127.0.0.1")
    sim.issuer.confirm_url_base = f"http://127.0.0.1:{site.getHost().port}"
    yield env
    await site.stopListening()
    await stop_env(env)


async def pending_payment(env, order: int, amount: int = 1250) -> dict:
    c = await env.connect()
    answer = await c.call(authorize(order, pan=CONFIRM_CARD, amount=amount))
    assert answer["status"] == "pending_customer_action", answer
    return answer


async def status_is(env, txn_id: str, status: str) -> bool:
    return (await env.journal.get_transaction(txn_id)).status.value == status


@pytest_twisted.ensureDeferred
async def test_the_confirmation_url_opens_a_page_whose_approve_button_completes_the_payment(bank):
    sim = bank.sims["bank_b"]
    before = sim.balance(CONFIRM_CARD)
    answer = await pending_payment(bank, 1, amount=1250)
    url = answer["confirmation_url"]

    code, content_type, page = await http("GET", url, accept=BROWSER)
    assert (code, content_type) == (200, "text/html; charset=utf-8"), page
    assert "12.50 USD" in page and "E2E SHOP" in page
    assert "520000******1005" in page and CONFIRM_CARD not in page
    parser = Forms()
    parser.feed(page)
    [form] = parser.forms
    assert form["method"] == "post"
    assert form["buttons"] == [("decision", "approve"), ("decision", "reject")]
    assert sim.balance(CONFIRM_CARD) == before  # looking is not paying

    code, content_type, done = await http("POST", urljoin(url, form["action"]), accept=BROWSER, form="decision=approve")
    assert (code, content_type) == (200, "text/html; charset=utf-8") and "Payment approved" in done, done
    await eventually(lambda: status_is(bank, answer["txn_id"], "approved"))
    assert sim.balance(CONFIRM_CARD) == before - 1250

    code, _, gone = await http("GET", url, accept=BROWSER)
    assert code == 404 and "No pending payment" in gone and "Traceback" not in gone


@pytest_twisted.ensureDeferred
async def test_the_json_post_api_still_decides_a_payment(bank):
    sim = bank.sims["bank_b"]
    before = sim.balance(CONFIRM_CARD)
    answer = await pending_payment(bank, 2)
    ref = answer["confirmation_url"].rsplit("/", 1)[1]

    code, content_type, body = await http("POST", f"{answer['confirmation_url']}?decision=reject")
    assert (code, content_type) == (200, "application/json"), body
    assert json.loads(body) == {"ref": ref, "decision": "reject", "acknowledged": "000"}
    await eventually(lambda: status_is(bank, answer["txn_id"], "declined"))
    assert sim.balance(CONFIRM_CARD) == before

    code, content_type, body = await http("POST", f"{answer['confirmation_url']}?decision=approve")
    assert (code, json.loads(body)) == (404, {"error": f"no pending payment {ref!r}"})


@pytest_twisted.ensureDeferred
async def test_a_page_for_an_unknown_or_bad_request_says_what_is_wrong(bank):
    base = bank.sims["bank_b"].issuer.confirm_url_base
    code, content_type, page = await http("GET", f"{base}/confirm/C999999", accept=BROWSER)
    assert (code, content_type) == (404, "text/html; charset=utf-8") and "C999999" in page
    code, _, page = await http("GET", f"{base}/confirm/%3Cscript%3E", accept=BROWSER)
    assert code == 404 and "<script>" not in page and "&lt;script&gt;" in page
    answer = await pending_payment(bank, 3)
    code, content_type, page = await http("POST", answer["confirmation_url"], accept=BROWSER, form="decision=maybe")
    assert (code, content_type) == (400, "text/html; charset=utf-8") and "approve or reject" in page
