"""The example reverse proxy, ``deploy/Caddyfile`` (issue 27, "Running it for months"): it
forwards exactly the paths Slack, Intuit, Clio and browsers call — the ones the code serves for
them — and answers everything else, ``/metrics`` and ``/healthz`` above all, 404 itself.

Read three ways: parsed here (always), adapted to JSON by Caddy itself, and run by Caddy on
loopback in front of a real ``hardcost serve --sandbox`` (both when the ``caddy`` binary is
installed: Debian's package ``caddy``, which .ci/run installs)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.firmkit import free_port, wait_answering

ROOT = Path(__file__).resolve().parents[1]
CADDYFILE = ROOT / "deploy" / "Caddyfile"
EXAMPLE_HOST = "hardcost.example.com"
EXAMPLE_UPSTREAM = "127.0.0.1:3000"
PRIVATE = ("/metrics", "/healthz")
CADDY = shutil.which("caddy")
needs_caddy = pytest.mark.skipif(CADDY is None, reason="caddy is not installed "
                                 "(apt-get install caddy)")


def public_paths() -> set[str]:
    """The paths the code serves to Slack, Intuit, Clio and browsers."""
    from hardcost.bot.oauth_routes import PROVIDER_NAMES
    from hardcost.bot.web import SLACK_PATHS
    from hardcost.bot.webhooks import WEBHOOK_PATH

    return set(SLACK_PATHS) | {WEBHOOK_PATH} | {
        f"/oauth/{provider}/callback" for provider in PROVIDER_NAMES}


def test_the_public_paths_are_the_documented_ones() -> None:
    assert public_paths() == {
        "/slack/events", "/slack/install", "/slack/oauth_redirect", "/webhooks/quickbooks",
        "/oauth/quickbooks/callback", "/oauth/clio/callback"}
    section = (ROOT / "docs/operations.md").read_text(encoding="utf-8").split(
        "### Behind a TLS reverse proxy", 1)[1].split("\n## ", 1)[0]
    for path in public_paths():
        assert f"`{path}`" in section, path


# -- the Caddyfile, parsed ---------------------------------------------------------------------

@dataclass
class Block:
    tokens: list[str]
    children: list[Block] = field(default_factory=list)


def parse_caddyfile(text: str) -> list[Block]:
    """Lines of tokens and ``{ … }`` blocks (what this example uses of the Caddyfile: no
    quoted tokens, no snippets, a block opened at the end of its line)."""
    root: list[Block] = []
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()  # a comment starts a token
        if not line:
            continue
        assert '"' not in line and "`" not in line, f"line {number}: quoted tokens: {raw!r}"
        if line == "}":
            assert len(stack) > 1, f"line {number}: unmatched }}"
            stack.pop()
            continue
        tokens = line.split()
        opens = tokens[-1] == "{"
        block = Block(tokens[:-1] if opens else tokens)
        stack[-1].append(block)
        if opens:
            stack.append(block.children)
    assert len(stack) == 1, "unclosed block"
    return root


def _walk(blocks: list[Block]) -> list[Block]:
    out = []
    for block in blocks:
        out.append(block)
        out.extend(_walk(block.children))
    return out


def test_the_example_forwards_exactly_the_public_paths() -> None:
    sites = parse_caddyfile(CADDYFILE.read_text(encoding="utf-8"))
    assert [site.tokens for site in sites] == [[EXAMPLE_HOST]], "one site: PUBLIC_URL's host"
    site = sites[0].children
    matchers = {b.tokens[0]: b for b in site if b.tokens[0].startswith("@")}
    handles = [b for b in site if b.tokens[0] == "handle"]
    assert [b.tokens for b in site if b not in handles and b.tokens[0] not in matchers] == []
    # handle @name { reverse_proxy 127.0.0.1:3000 }, then handle { respond 404 }
    assert [h.tokens for h in handles] == [["handle", h.tokens[1]] for h in handles[:1]] + [
        ["handle"]], "a handle for the public paths, then a catch-all"
    forward, rest = handles
    name = forward.tokens[1]
    assert [c.tokens for c in forward.children] == [["reverse_proxy", EXAMPLE_UPSTREAM]]
    assert [c.tokens for c in rest.children] == [["respond", "404"]]
    # the matcher: path lines only (exact paths, no wildcard), nothing that narrows or widens
    matcher = matchers[name]
    assert {c.tokens[0] for c in matcher.children} == {"path"}, matcher
    forwarded = [p for c in matcher.children for p in c.tokens[1:]]
    assert all("*" not in p and p.startswith("/") for p in forwarded), forwarded
    assert sorted(forwarded) == sorted(public_paths())
    # nothing else in the file reaches hardcost, nor names a private path
    everything = _walk(sites)
    assert [b for b in everything if b.tokens[0] == "reverse_proxy"] == forward.children
    assert not any(p in token for b in everything for token in b.tokens for p in PRIVATE)


def test_the_parser_sees_through_comments_and_blocks() -> None:
    parsed = parse_caddyfile("a.example {\n\t# path /metrics\n\t@x {\n\t\tpath /a /b # c\n"
                             "\t}\n}\n")
    assert parsed[0].tokens == ["a.example"]
    assert parsed[0].children[0].children[0].tokens == ["path", "/a", "/b"]


# -- Caddy's own reading -----------------------------------------------------------------------

def _caddy_env(tmp_path: Path) -> dict[str, str]:
    """Caddy keeps its state (certificates, autosave) under the XDG directories: the test's."""
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}


@needs_caddy
def test_caddy_reads_the_example_as_forwarding_exactly_the_public_paths(
        tmp_path: Path) -> None:
    adapted = subprocess.run([str(CADDY), "adapt", "--config", str(CADDYFILE), "--adapter",
                              "caddyfile"], capture_output=True, text=True, timeout=60,
                             env=_caddy_env(tmp_path))
    assert adapted.returncode == 0, adapted.stderr
    assert "WARN" not in adapted.stderr, adapted.stderr  # e.g. "not formatted": run caddy fmt
    config = json.loads(adapted.stdout)
    servers = config["apps"]["http"]["servers"]
    assert len(servers) == 1
    (site,) = next(iter(servers.values()))["routes"]
    assert site["match"] == [{"host": [EXAMPLE_HOST]}]

    def handlers(route: dict[str, Any]) -> list[dict[str, Any]]:
        """The leaf handlers of a route, through Caddy's subroutes."""
        out = []
        for handler in route.get("handle", []):
            if handler["handler"] == "subroute":
                for inner in handler["routes"]:
                    out.extend(handlers(inner))
            else:
                out.append(handler)
        return out

    (inner,) = [h for h in site["handle"] if h["handler"] == "subroute"]
    forward, rest = inner["routes"]
    assert forward["match"] == [{"path": forward["match"][0]["path"]}]
    assert sorted(forward["match"][0]["path"]) == sorted(public_paths())
    assert [(h["handler"], [u["dial"] for u in h["upstreams"]]) for h in handlers(forward)] \
        == [("reverse_proxy", [EXAMPLE_UPSTREAM])]
    assert "match" not in rest
    assert [(h["handler"], h.get("status_code")) for h in handlers(rest)] == [
        ("static_response", 404)]


# -- Caddy in front of hardcost serve ----------------------------------------------------------

def _raw_get(port: int, target: str) -> tuple[int, str]:
    """GET ``target`` exactly as written (no client-side cleaning of ``..`` or ``//``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


@needs_caddy
def test_caddy_in_front_of_hardcost_serve_passes_the_public_paths_only(
        database_url: str, serve_slack: tuple[str, str], tmp_path: Path) -> None:
    bot_token, slack_url = serve_slack
    port, proxy_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "QBO_", "CLIO_")) and k not in ("PORT", "PUBLIC_URL")}
    env.update({"DATABASE_URL": database_url, "SLACK_BOT_TOKEN": bot_token,
                "SLACK_SIGNING_SECRET": "proxy-test-secret", "SLACK_API_URL": f"{slack_url}/api/",
                "PORT": str(port), "HARDCOST_HOST": "127.0.0.1",
                "PUBLIC_URL": f"http://127.0.0.1:{proxy_port}"})
    hardcost = subprocess.Popen([sys.executable, "-m", "hardcost", "serve", "--sandbox"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    caddy: subprocess.Popen[str] | None = None
    try:
        wait_answering(f"http://127.0.0.1:{port}/healthz", hardcost, "hardcost serve")
        # The example as shipped, on loopback: plain HTTP on a free port, no admin endpoint.
        text = CADDYFILE.read_text(encoding="utf-8")
        site, upstream = f"\n{EXAMPLE_HOST} {{", f"reverse_proxy {EXAMPLE_UPSTREAM}\n"
        assert text.count(site) == 1 and text.count(upstream) == 1
        config = tmp_path / "Caddyfile"
        config.write_text("{\n\tadmin off\n}\n" + text.replace(
            site, f"\nhttp://127.0.0.1:{proxy_port} {{").replace(
            upstream, f"reverse_proxy 127.0.0.1:{port}\n"), encoding="utf-8")
        caddy = subprocess.Popen([str(CADDY), "run", "--config", str(config), "--adapter",
                                  "caddyfile"], env=_caddy_env(tmp_path),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proxy = f"http://127.0.0.1:{proxy_port}"
        wait_answering(f"{proxy}/", caddy, "caddy")

        # What hardcost itself answers each public path with, straight and through Caddy.
        def both(method: str, path: str, **kwargs: Any) -> tuple[requests.Response, ...]:
            return tuple(requests.request(method, f"{base}{path}", timeout=10, **kwargs)
                         for base in (f"http://127.0.0.1:{port}", proxy))

        unsigned = {"data": "command=/hardcost&text=status",
                    "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
        for method, path, kwargs in [
                ("POST", "/slack/events", unsigned),
                ("GET", "/slack/install", {}),
                ("GET", "/slack/oauth_redirect?code=x&state=y", {}),
                ("POST", "/webhooks/quickbooks", {"data": "{}", "headers": {
                    "Content-Type": "application/json", "intuit-signature": "bad"}}),
                ("GET", "/oauth/quickbooks/callback?code=x&state=forged&realmId=1", {}),
                ("GET", "/oauth/clio/callback?code=x&state=forged", {})]:
            straight, proxied = both(method, path, **kwargs)
            assert (proxied.status_code, proxied.text) == (straight.status_code, straight.text), \
                path
            # waitress names itself: the answer came from hardcost, through Caddy
            assert "hardcost" in proxied.headers.get("Server", ""), (path, proxied.headers)
        straight, proxied = both("POST", "/slack/events", **unsigned)
        assert straight.status_code == 401 and proxied.status_code == 401  # hardcost's answer

        # The private paths answer straight, and 404 from Caddy itself through the proxy.
        for path in PRIVATE:
            straight, proxied = both("GET", path)
            assert straight.status_code == 200, (path, straight.text[:200])
            assert proxied.status_code == 404 and proxied.text == "", (path, proxied.text[:200])
            assert "hardcost" not in proxied.headers.get("Server", "").lower()
        for target in ["/metrics/", "/METRICS", "/metrics?x=1", "/slack/events/../../metrics",
                       "/slack/events/%2e%2e/%2e%2e/metrics", "//metrics", "/healthz/",
                       "/slack/events/../healthz", "/slack", "/oauth/clio/callback/../../metrics",
                       "/", "/sandbox", "/api/"]:
            status, body = _raw_get(proxy_port, target)
            assert "hardcost_runs_total" not in body and '"scheduler"' not in body, target
            assert status == 404, (target, status, body[:200])
    finally:
        for proc in (caddy, hardcost):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.communicate(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
