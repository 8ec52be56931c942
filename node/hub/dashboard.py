"""The hub operator's page: per-department delivery, node liveness, quarantine (server-rendered, no scripts)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html import escape
from typing import Any

from ..protocol.envelope import parse_time

CHINA = timezone(timedelta(hours=8))
HEARTBEAT_STALE_SECONDS = 180


def local_time(stamp: str | None) -> str:
    """UTC on the wire, Asia/Shanghai on screen."""
    if not stamp:
        return "—"
    try:
        return parse_time(stamp).astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return escape(stamp)


def age(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return (datetime.now(timezone.utc) - parse_time(stamp)).total_seconds()
    except ValueError:
        return None


def _type_title(record_type: str) -> str:
    """行政处罚 for administrative_penalty: the words the operators use."""
    from ..protocol.validation import default_registry

    try:
        return default_registry().get(record_type).title
    except Exception:  # noqa: BLE001 - a type this version does not know keeps its code
        return record_type


def render(view: dict[str, Any], hub_name: str) -> str:
    rows = []
    for d in view["departments"]:
        records = d["records"]
        nodes = d["nodes"]
        alive = [n for n in nodes if (age(n["received"]) or 1e9) < HEARTBEAT_STALE_SECONDS]
        node_cell = "<span class=bad>无心跳 no heartbeat</span>" if not nodes else "<br>".join(
            f"<span class={'ok' if n in alive else 'bad'}>{escape(n['node'])}</span> "
            f"{local_time(n['received'])} · 待发送 outbox {n['outbox_depth']}"
            + (f" · <span class=bad>{escape(str(n['last_error'])[:120])}</span>" if n.get("last_error") else "")
            for n in nodes)
        completeness = "—"
        if d["inventory"]:
            held = sum(d["by_type"].get(t, 0) for t in d["inventory"])
            total = sum(d["inventory"].values())
            completeness = f"{held:,} / {total:,}" + (f" ({held / total:.0%})" if total else "")
        types = ", ".join(f"{escape(_type_title(t))} {n:,}" for t, n in sorted(d["by_type"].items())) or "—"
        rows.append(
            f"<tr><td><b>{escape(d['name'])}</b><br><code>{escape(d['dept'])}</code> · {escape(d['region'])}</td>"
            f"<td class=num>{d['accepted']:,}</td><td class=num>{d['rejected']:,}</td>"
            f"<td class=num>{d['duplicates']:,}</td><td class=num>{records.get('active', 0):,}"
            f" / {records.get('retracted', 0):,}</td><td class=num>{d['ledger_size']:,}</td>"
            f"<td>{d['batches']:,} · {local_time(d['last_batch'])}</td><td>{completeness}</td>"
            f"<td class=num>{d['quarantined']:,}</td><td>{node_cell}</td><td class=small>{types}</td></tr>")
    body = "\n".join(rows) or "<tr><td colspan=11>尚无部门 no departments enrolled yet</td></tr>"
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>{escape(hub_name)} · 报送情况 delivery</title>
<style>
body {{ font: 14px/1.45 system-ui, "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 24px; color: #1d2433; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ border-bottom: 1px solid #dde2ea; padding: 6px 8px;
vertical-align: top; text-align: left; }} th {{ background: #f3f5f9; font-weight: 600; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }} .ok {{ color: #1a7f37; }} .bad {{ color: #c62828; }}
.small {{ font-size: 12px; color: #555; }} code {{ color: #555; }} nav a {{ margin-right: 16px; }}
</style></head><body>
<h1>{escape(hub_name)} · 各部门报送情况 Delivery by department</h1>
<nav><a href="/api/v1/departments">departments API</a><a href="/api/v1/quarantine">隔离 quarantine
({view['quarantined_total']:,})</a><a href="/api/v1/openapi.json">OpenAPI</a><a href="/metrics">metrics</a></nav>
<p class=small>每5秒刷新 · refreshes every 5 s · 时间为北京时间 times in Asia/Shanghai</p>
<table><thead><tr><th>部门 department</th><th>接收 accepted</th><th>退回 rejected</th><th>重复 duplicate</th>
<th>在公示/已撤销 active / retracted</th><th>账本 ledger</th><th>批次 batches · 最近 last</th>
<th>完整性 held / at source</th><th>隔离 quarantined</th><th>前置机 nodes</th><th>按类型 by type</th></tr></thead>
<tbody>{body}</tbody></table></body></html>"""
