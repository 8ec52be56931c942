"""Compliance reports as files — HTML (A4, printable), PDF made from it, XLSX, CSV, JSON — signed by the hub, and the monthly ones it keeps.

Every file is made from one data section (compliance.build_report) and carries, beside it, a
detached signature (`<file>.sig`, cx.protocol.reports) over the file's and the data section's
SHA-256, so a circulated copy can be checked offline with `cx verify-report`.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

import structlog
from markupsafe import Markup
from sqlalchemy import select

from ..protocol.envelope import parse_time, utc_now
from ..protocol.keys import SigningKey
from ..protocol.reports import ReportSignature, sha256
from ..protocol.validation import CHINA
from . import compliance
from .i18n import LANGUAGES, catalog
from .store import Store, compliance_reports

log = structlog.get_logger("cx.hub.reports")

HTML_LANG = {"zh": "zh-CN", "en": "en"}
FORMATS = ("html", "pdf", "xlsx", "csv", "json")
MEDIA_TYPES = {
    "json": "application/json", "html": "text/html; charset=utf-8", "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "csv": "text/csv; charset=utf-8",
}
LATE_SHOWN_IN_PAGES = 200  # per department in HTML and PDF; XLSX and CSV list every late record the data holds
PERIODIC_FORMATS = ("json", "html", "pdf", "xlsx", "csv")


@dataclass(frozen=True)
class Report:
    """One rendered report and its detached signature."""

    format: str
    lang: str
    body: bytes
    data: bytes  # the data section it was made from
    signature: ReportSignature

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def filename(self, data: dict[str, Any]) -> str:
        scope = "all" if data["scope"] == "all" else "-".join(data["scope"])
        return f"compliance-{data['period']['from']}-{data['period']['to']}-{scope}-{self.lang}.{self.format}"


# -- words -----------------------------------------------------------------------------------

def check_lang(lang: str | None) -> str:
    if lang is None:
        return "zh"
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: use one of {', '.join(LANGUAGES)} 语言应为 zh 或 en")
    return lang


class Words:
    """Everything a report says in words, in one language (the console's catalog: reports are made outside any
    request, by the command line and the monthly task, so the language is chosen here, not per request)."""

    def __init__(self, lang: str):
        self.lang = check_lang(lang)
        self._ = catalog(self.lang).gettext

    def status(self, status: str) -> str:
        _ = self._
        return {"met": _("met"), "met_late": _("met late"), "open": _("open"), "overdue": _("overdue")}.get(status,
                                                                                                           status)

    def reason(self, row: dict[str, Any]) -> str:
        """An obligation status's reason, in words, with its figures."""
        _ = self._
        p = {k: (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in row.items()}
        texts = {
            "completed": _("Confirmed done on %(completed)s."),
            "completed_late": _("Confirmed done on %(completed)s, after the due date."),
            "not_confirmed": _("Not confirmed done by the office yet."),
            "expected_reached": _("%(received)s records arrived; %(expected)s were expected by the due date."),
            "expected_reached_late": _("The %(expected)s expected records were complete only on %(reached)s."),
            "expected_missing": _("%(missing)s of the %(expected)s expected records have not arrived."),
            "no_inventory": _("%(received)s records arrived, but the department's node sends no inventory and no "
                              "count is expected: completeness cannot be measured."),
            "inventory_missing": _("%(missing)s records at the source are not at the hub (source %(inventory)s, "
                                   "hub %(held)s)."),
            "period_running": _("Complete so far (%(received)s records); the period is still running."),
            "arrived_late": _("Everything arrived, %(late)s record(s) after the due date (the last on %(last)s)."),
            "all_arrived": _("Everything arrived by the due date (%(received)s records in the period)."),
            "not_enrolled": _("The department is not enrolled at the hub."),
        }
        text = texts.get(row.get("reason", ""))
        if text is None:
            return str(row.get("reason", ""))
        try:
            return text % p
        except (KeyError, TypeError, ValueError):
            return text

    def type_name(self, rtype: str, title: str | None = None) -> str:
        if self.lang == "zh":
            return title or _type_title(rtype)
        return rtype.replace("_", " ").capitalize()

    def calendar_source(self, c: dict[str, Any]) -> str:
        _ = self._
        source = {"package": _("chinesecalendar"), "override": _("the hub's calendar file"),
                  "package+override": _("chinesecalendar, corrected by the hub's calendar file"),
                  "estimated": _("estimated: Monday to Friday, with the holidays known so far")}.get(c["source"],
                                                                                                    c["source"])
        return f"{source} ({c['detail']})"


def _type_title(rtype: str) -> str:
    from .compliance import _title

    return _title(rtype)


# -- formatting ------------------------------------------------------------------------------

def local_time(stamp: str | None) -> str:
    if not stamp:
        return "—"
    return parse_time(stamp).astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


def pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


def num(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def days(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def css_string(value: str) -> Markup:
    """Text safe inside a CSS string in a <style> element."""
    out = "".join(c if c.isalnum() or c in " -_.·:/()（）" or ord(c) > 127 else f"\\{ord(c):x} " for c in str(value))
    return Markup(out)


@cache
def _environment(lang: str) -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("cx.hub", "templates"), autoescape=select_autoescape(("html",)),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(catalog(lang), newstyle=True)
    env.filters.update(local_time=local_time, pct=pct, num=num, days=days, css_string=css_string)
    return env


# -- renderings ------------------------------------------------------------------------------

def render_html(data: dict[str, Any], *, lang: str, generated: str, hub_key_id: str) -> bytes:
    words = Words(lang)
    template = _environment(words.lang).get_template("reports/compliance.html")
    html = template.render(
        r=data, generated=generated, hub_key_id=hub_key_id, html_lang=HTML_LANG[words.lang],
        data_sha256=sha256(compliance.data_bytes(data)), late_shown=LATE_SHOWN_IN_PAGES,
        dept_names={d["dept"]: d["name"] for d in data["departments"]},
        status_label=words.status, reason=words.reason, type_name=words.type_name,
        calendar_source=words.calendar_source)
    return html.encode("utf-8")


def render_pdf(data: dict[str, Any], *, lang: str, generated: str, hub_key_id: str) -> bytes:
    """The HTML rendering laid out on A4 by WeasyPrint."""
    import weasyprint

    html = render_html(data, lang=lang, generated=generated, hub_key_id=hub_key_id)
    document = weasyprint.HTML(string=html.decode("utf-8")).render()
    document.metadata.title = f"{Words(lang)._('Deadline compliance report')} {data['period']['from']} – " \
                              f"{data['period']['to']}"
    document.metadata.authors = [data["hub"]]
    stamp = parse_time(generated).isoformat()
    document.metadata.created = document.metadata.modified = stamp
    return document.write_pdf()


def tables(data: dict[str, Any], lang: str) -> list[tuple[str, list[tuple[str, str]], list[list[Any]]]]:
    """The report as tables: (title, [(header, kind)], rows); kind says how a cell is shown (XLSX and CSV)."""
    w = Words(lang)
    _ = w._
    names = {d["dept"]: d["name"] for d in data["departments"]}
    period = data["period"]
    about = [
        [_("Report"), _("Deadline compliance report")], [_("Hub"), data["hub"]],
        [_("Period"), f"{period['from']} – {period['to']}"], [_("Figures as of"), local_time(period["as_of"])],
        [_("Departments"), _("all departments") if data["scope"] == "all" else ", ".join(data["scope"])],
        [_("Estimated calendar years"), ", ".join(map(str, data["estimated_years"])) or _("none")],
        [_("Obligations"), (f"{data['obligation_set']['title']} v{data['obligation_set']['version']} "
                            f"({local_time(data['obligation_set']['loaded'])}, {data['obligation_set']['loaded_by']})")
         if data["obligation_set"] else _("no obligations loaded")],
        [_("Rules fingerprint"), data["basis"]["fingerprint"]],
        [_("Data section SHA-256"), sha256(compliance.data_bytes(data))],
    ]
    text = [(_("Item"), "text"), (_("Value"), "text")]
    out: list[tuple[str, list[tuple[str, str]], list[list[Any]]]] = [(_("About"), text, about)]
    out.append((_("Ranking"), [(_("Rank"), "int"), (_("Department ID"), "text"), (_("Department"), "text"),
                               (_("On-time share"), "share"), (_("Late"), "int"), (_("Not delivered"), "int"),
                               (_("Lag P95 (working days)"), "days"), (_("Silent"), "bool")],
                [[x["rank"], x["dept"], x["name"], x["on_time_share"], x["late"], x["missing"], x["lag_p95"],
                  _("yes") if x["silent"] else _("no")] for x in data["ranking"]]))
    out.append((_("Departments"), [
        (_("Department ID"), "text"), (_("Department"), "text"), (_("Record type"), "text"), (_("Type code"), "text"),
        (_("Limit (working days)"), "int"), (_("Received records"), "int"), (_("On time"), "int"), (_("Late"), "int"),
        (_("Corrections"), "int"), (_("Retractions"), "int"), (_("On-time share"), "share"),
        (_("Lag median (working days)"), "days"), (_("Lag P95 (working days)"), "days"), (_("At the source"), "int"),
        (_("Held at the hub"), "int"), (_("Not delivered"), "int"), (_("Surplus at the hub"), "int"),
        (_("Rejected at the hub"), "int"), (_("Rejected at the department"), "int")],
        [[d["dept"], d["name"], w.type_name(t["type"], t["title"]), t["type"], t["limit"], t["versions"], t["on_time"],
          t["late"], t["corrections"], t["retractions"], t["on_time_share"], t["lag_median"], t["lag_p95"],
          t["inventory"], t["held"], t["missing"], t["surplus"], t["rejected_hub"], t["rejected_dept"]]
         for d in data["departments"] for t in d["by_type"]]))
    out.append((_("Obligations"), [
        (_("Obligation ID"), "text"), (_("Obligation"), "text"), (_("Responsible unit"), "text"),
        (_("Department ID"), "text"), (_("Department"), "text"), (_("Period from"), "date"), (_("Period to"), "date"),
        (_("Due"), "date"), (_("Status"), "text"), (_("Reason"), "text")],
        [[o["id"], o["title"], o["unit"], o["dept"], names.get(o["dept"], o["dept"]), o["from"], o["to"], o["due"],
          w.status(o["status"]), w.reason(o)] for o in data["obligations"]]))
    out.append((_("Late records"), [
        (_("Department ID"), "text"), (_("Record ID"), "text"), (_("Record type"), "text"), (_("Event date"), "date"),
        (_("Deadline"), "date"), (_("Received"), "time"), (_("Lag (working days)"), "int"),
        (_("Limit (working days)"), "int"), (_("Estimated years"), "text")],
        [[d["dept"], x["record_id"], w.type_name(x["type"]), x["event_date"], x["deadline"], x["received"], x["lag"],
          x["limit"], x["estimated"] or ""] for d in data["departments"] for x in d["late_records"]]))
    out.append((_("Rejections"), [
        (_("Department ID"), "text"), (_("Where"), "text"), (_("Record type"), "text"), (_("Rule"), "text"),
        (_("Records"), "int")],
        [[d["dept"], where, w.type_name(x["type"]), x["rule"], x.get("records", x.get("rows"))]
         for d in data["departments"]
         for where, side in ((_("at the hub"), "hub"), (_("at the department"), "department"))
         for x in d["rejections"][side]]))
    out.append((_("Liveness"), [
        (_("Department ID"), "text"), (_("Node"), "text"), (_("Last heartbeat"), "time"), (_("Last batch"), "time"),
        (_("Version"), "text"), (_("Silent"), "bool")],
        [[d["dept"], n["node"], n["last_heartbeat"], n["last_batch"], n["version"] or "",
          _("yes") if n["silent"] else _("no")] for d in data["departments"] for n in d["liveness"]["nodes"]]))
    out.append((_("Trend"), [
        (_("Department ID"), "text"), (_("Month"), "text"), (_("Received records"), "int"), (_("On time"), "int"),
        (_("Late"), "int"), (_("On-time share"), "share")],
        [[t["dept"], p["period"], p["versions"], p["on_time"], p["late"], p["on_time_share"]]
         for t in data["trend"]["departments"] for p in t["points"]]))
    out.append((_("Ledger checkpoints"), [
        (_("Department ID"), "text"), (_("Ledger size"), "int"), (_("Root"), "text"), (_("Checkpoint time"), "time"),
        (_("Hub key"), "text")],
        [[d["dept"], d["checkpoint"]["size"], d["checkpoint"]["root"], d["checkpoint"]["time"],
          d["checkpoint"]["key_id"]] for d in data["departments"] if d["checkpoint"]]))
    out.append((_("Calendar"), [(_("Year"), "int"), (_("Estimated"), "bool"), (_("Working days from"), "text")],
                [[c["year"], _("yes") if c["estimated"] else _("no"), w.calendar_source(c)]
                 for c in data["basis"]["calendar"]]))
    return out


def render_xlsx(data: dict[str, Any], *, lang: str, generated: str, hub_key_id: str) -> bytes:
    """One sheet per section; Chinese headers by default, a frozen header row, real numbers and dates."""
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    write_sheets(wb, tables(data, lang))
    moment = parse_time(generated).astimezone(CHINA).replace(tzinfo=None)
    wb.properties.creator = data["hub"]
    wb.properties.title = Words(lang)._("Deadline compliance report")
    wb.properties.created = wb.properties.modified = moment
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def xlsx_bytes(sections: list[tuple[str, list[tuple[str, str]], list[list[Any]]]]) -> bytes:
    """A workbook of these sections (see `write_sheets`), as bytes."""
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    write_sheets(wb, sections)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def write_sheets(wb: Any, sections: list[tuple[str, list[tuple[str, str]], list[list[Any]]]]) -> None:
    """One sheet per (title, [(header, kind)], rows): a frozen bold header, real numbers and dates, a filter."""
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    header_font, header_fill = Font(bold=True), PatternFill("solid", fgColor="EEF1F6")
    formats = {"int": "#,##0", "share": "0.0%", "days": "0.0", "date": "yyyy-mm-dd", "time": "yyyy-mm-dd hh:mm:ss"}
    for title, columns, rows in sections:
        ws = wb.create_sheet(_sheet_title(title))
        ws.append([h for h, _ in columns])
        for cell in ws[1]:
            cell.font, cell.fill = header_font, header_fill
            cell.alignment = Alignment(vertical="center", wrap_text=True)
        ws.freeze_panes = "A2"
        widths = [max(8, _width(h)) for h, _ in columns]
        for number, row in enumerate(rows, start=2):
            values = [_cell(v, kind) for v, (_, kind) in zip(row, columns)]
            ws.append(values)
            for i, (v, (_, kind)) in enumerate(zip(values, columns)):
                if v is not None and kind in formats:
                    ws.cell(number, i + 1).number_format = formats[kind]
                if number < 200:  # column widths from the first rows are enough
                    shown = local_time(row[i]) if kind == "time" and row[i] else row[i]
                    widths[i] = min(60, max(widths[i], _width(shown)))
        for i, width in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(i)].width = width + 2
        if rows:
            ws.auto_filter.ref = ws.dimensions


def _sheet_title(title: str) -> str:
    return "".join(c for c in title if c not in "[]:*?/\\")[:31]


def _width(value: Any) -> int:
    text = "" if value is None else str(value)
    return sum(2 if ord(c) > 0x2E80 else 1 for c in text)


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "time":
        return parse_time(value).astimezone(CHINA).replace(tzinfo=None)
    return value


def render_csv(data: dict[str, Any], *, lang: str, generated: str, hub_key_id: str) -> bytes:
    """Every section one after another, each under its title, in UTF-8 with a BOM so that Excel reads it."""
    return csv_sections(tables(data, lang), [Words(lang)._("Generated"), local_time(generated)])


def csv_sections(sections: list[tuple[str, list[tuple[str, str]], list[list[Any]]]],
                 first: list[str] | None = None) -> bytes:
    """Sections one after another (each under its title when there are several), UTF-8 with a BOM for Excel."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if first:
        writer.writerow(first)
    for title, columns, rows in sections:
        if first or len(sections) > 1:
            writer.writerow([])
            writer.writerow([f"# {title}"])
        writer.writerow([h for h, _ in columns])
        for row in rows:
            writer.writerow([_csv_cell(v, kind) for v, (_, kind) in zip(row, columns)])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _csv_cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "share":
        return f"{value * 100:.1f}%"
    if kind == "time":
        return local_time(value)
    if kind == "days":
        return days(value)
    return str(value)


def render_json(data: dict[str, Any], **_: Any) -> bytes:
    return compliance.data_bytes(data)


RENDERERS: dict[str, Callable[..., bytes]] = {"html": render_html, "pdf": render_pdf, "xlsx": render_xlsx,
                                             "csv": render_csv, "json": render_json}


def render(data: dict[str, Any], fmt: str, *, lang: str, key: SigningKey, generated: str | None = None) -> Report:
    """Render the data section in one format and sign the result."""
    if fmt not in RENDERERS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)} 格式应为 {'、'.join(FORMATS)}")
    lang = check_lang(lang)
    generated = generated or utc_now()
    body = RENDERERS[fmt](data, lang=lang, generated=generated, hub_key_id=key.key_id)
    payload = compliance.data_bytes(data)
    scope = "all" if data["scope"] == "all" else ",".join(data["scope"])
    signature = ReportSignature.sign(key, body, payload, format=fmt, lang=lang, period_from=data["period"]["from"],
                                     period_to=data["period"]["to"], scope=scope, generated=generated)
    return Report(fmt, lang, body, payload, signature)


def api_answer(data: dict[str, Any], *, lang: str, key: SigningKey) -> dict[str, Any]:
    """The JSON API's answer: the data section, its detached signature (over the data section's exact bytes,
    as `?format=json` downloads them), and the obligations' statuses and reasons in words."""
    report = render(data, "json", lang=lang, key=key)
    words = Words(lang)
    return {"data": data, "data_sha256": report.signature.data_sha256,
            "signature": report.signature.to_bytes().decode("ascii"),
            "words": {"lang": words.lang, "obligations": [
                {"id": o["id"], "dept": o["dept"], "due": o["due"], "status": words.status(o["status"]),
                 "reason": words.reason(o)} for o in data["obligations"]]}}


# -- the reports the hub keeps ---------------------------------------------------------------

def due_month(today: date, report_day: int) -> tuple[date, date]:
    """The latest month whose periodic report is due on `today` (made on `report_day` of the month after)."""
    year, month = today.year, today.month - (1 if today.day >= report_day else 2)
    while month < 1:
        year, month = year - 1, month + 12
    first = date(year, month, 1)
    following = date(year + (month == 12), month % 12 + 1, 1)
    return first, following - timedelta(days=1)


def keep(store: Store, data: dict[str, Any], report: Report, scope: str) -> bool:
    """Store a report; False when one for the same period, scope, language and format is already kept."""
    from sqlalchemy.exc import IntegrityError

    try:
        with store.writer.begin() as conn:
            conn.execute(compliance_reports.insert().values(
                period_from=data["period"]["from"], period_to=data["period"]["to"], scope=scope, lang=report.lang,
                format=report.format, generated=report.signature.generated, data_sha256=report.signature.data_sha256,
                body=report.body, signature=report.signature.to_bytes()))
    except IntegrityError:
        return False
    return True


def kept(store: Store, scopes: set[str] | None = None) -> list[dict[str, Any]]:
    """The reports the hub keeps (without their bodies); `scopes` limits them (a department sees its own)."""
    c = compliance_reports.c
    query = select(c.id, c.period_from, c.period_to, c.scope, c.lang, c.format, c.generated, c.data_sha256)
    if scopes is not None:
        query = query.where(c.scope.in_(sorted(scopes)))
    with store.reader.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(c.period_from.desc(), c.scope, c.format))]


def kept_report(store: Store, report_id: int) -> dict[str, Any] | None:
    with store.reader.connect() as conn:
        row = conn.execute(select(compliance_reports).where(compliance_reports.c.id == report_id)).first()
    return dict(row._mapping) if row else None


def report_data(store: Store, cfg: Any, period_from: date, period_to: date, depts: list[str] | None,
                as_of: str | None = None, *, catch_up: bool = True) -> dict[str, Any]:
    """Bring the timeliness view up to date, then build the data section (CLI, API, console and the periodic
    reports share this)."""
    from . import obligations
    from .projections import Projector, hub_projections
    from .timeliness import basis_in_force

    projections = hub_projections(cfg)
    if catch_up:
        Projector(store, projections).catch_up()
    basis = basis_in_force(store) or projections[0].configured
    request = compliance.Request(period_from, period_to, tuple(depts) if depts else None, as_of)
    return compliance.build_report(store, request, settings=compliance.Settings.from_config(cfg), basis=basis,
                                   obligation_set=obligations.current(store))


def make_periodic(store: Store, cfg: Any, key: SigningKey, first: date, last: date,
                  *, formats: tuple[str, ...] = PERIODIC_FORMATS, generated: str | None = None) -> list[str]:
    """Make and keep one period's reports: one for every department together (the office's) and one per
    department (each its own), in each configured language and format. Returns what was made."""
    from .store import departments

    with store.reader.connect() as conn:
        depts = [d for (d,) in conn.execute(select(departments.c.dept).order_by(departments.c.dept))]
    made = []
    for i, scope in enumerate(["*", *depts]):
        data = report_data(store, cfg, first, last, None if scope == "*" else [scope], catch_up=i == 0)
        for lang in cfg.compliance.report_langs:
            for fmt in formats:
                if keep(store, data, render(data, fmt, lang=lang, key=key, generated=generated), scope):
                    made.append(f"{first:%Y-%m} {scope} {lang} {fmt}")
    return made


def due_and_missing(store: Store, cfg: Any, today: date | None = None) -> tuple[date, date] | None:
    """The latest month whose reports are due, if the hub does not keep them yet."""
    today = today or datetime.now(CHINA).date()
    first, last = due_month(today, cfg.compliance.report_day)
    with store.reader.connect() as conn:
        c = compliance_reports.c
        have = conn.execute(select(c.id).where(c.period_from == first.isoformat(), c.period_to == last.isoformat(),
                                               c.scope == "*").limit(1)).first()
    return None if have is not None else (first, last)


def ensure_periodic(store: Store, cfg: Any, key: SigningKey, today: date | None = None) -> list[str]:
    """Make the latest due month's reports if the hub does not keep them yet."""
    due = due_and_missing(store, cfg, today)
    return make_periodic(store, cfg, key, *due) if due else []


async def periodic_reports(store: Store, cfg: Any, key: SigningKey, stop: asyncio.Event,
                           interval: float = 3600.0, first_delay: float = 60.0) -> None:
    """Run beside the hub: check hourly whether a month's reports are due, and make them.

    Laying out PDFs takes seconds of CPU per report, so a hub that was started from a configuration
    file makes them in a `cx report periodic` process of its own: ingest in this one is not slowed.
    """
    import sys

    delay = first_delay
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
            return
        except asyncio.TimeoutError:
            pass
        delay = interval
        try:
            due = await asyncio.to_thread(due_and_missing, store, cfg)
            if due is None:
                continue
            if cfg.path is None:
                made = await asyncio.to_thread(make_periodic, store, cfg, key, *due)
                log.info("periodic compliance reports made", reports=len(made), period=f"{due[0]:%Y-%m}")
                continue
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cx.cli", "report", "periodic", "--config", str(cfg.path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            text = out.decode("utf-8", "replace").strip()
            if proc.returncode == 0:
                log.info("periodic compliance reports made", period=f"{due[0]:%Y-%m}", output=text[-500:])
            else:
                log.error("periodic compliance reports failed; retrying in an hour", output=text[-2000:])
        except Exception:  # noqa: BLE001 - a failed report must not stop the hub; tried again next round
            log.exception("periodic compliance report failed; retrying in an hour")


def compliance_ctx(config_key: Any) -> Callable[[Any], AsyncIterator[None]]:
    """The hub's owner of what compliance needs running (an aiohttp cleanup context): the obligations file
    loaded when it changed, the figures behind the compliance metrics, the monthly reports."""
    from .compliance import ComplianceFigures
    from .web import METRICS, STORE

    async def ctx(app: Any) -> AsyncIterator[None]:
        cfg, store = app[config_key], app[STORE]
        await asyncio.to_thread(load_configured_obligations, store, cfg)
        figures = ComplianceFigures(store)
        app[METRICS].registry.register(figures)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(figures.run(stop)),
                 asyncio.create_task(periodic_reports(store, cfg, SigningKey.load(cfg.hub.signing_key), stop))]
        yield
        stop.set()
        await asyncio.gather(*tasks)

    return ctx


def load_configured_obligations(store: Store, cfg: Any) -> None:
    """At start: keep the configured obligations file as a new version when it changed (a bad one is logged)."""
    from . import obligations

    path = cfg.compliance.obligations
    if path is None or not path.exists():
        return
    try:
        loaded = obligations.load_file(store, path, by=f"hub start ({path.name})")
    except obligations.ObligationsError as exc:
        log.error("the obligations file has problems; the version in force stays", error=str(exc))
        return
    if loaded.changed:
        log.info("obligations loaded", version=loaded.current.version, **loaded.changes)
