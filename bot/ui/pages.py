"""The small HTML pages a browser lands on after connecting QuickBooks or Clio."""

from __future__ import annotations

from html import escape


def oauth_page(title: str, message: str, *, ok: bool) -> str:
    mark = "✅" if ok else "⚠️"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hardcost — {escape(title)}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;
color:#1d1c1d}}h1{{font-size:1.4rem}}p.back{{color:#616061}}</style></head>
<body><h1>{mark} {escape(title)}</h1><p>{escape(message)}</p>
<p class="back">Return to Slack; <code>/hardcost status</code> shows the connections.</p>
</body></html>
"""
