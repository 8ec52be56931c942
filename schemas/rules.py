"""Record rules JSON Schema cannot say; a schema lists the ones it uses under "x-rules".

Each rule looks at a record's data (already checked against its schema, so a rule only
acts on well-formed values) and yields FieldErrors in the same shape as schema errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from cx.protocol.errors import FieldError

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class RuleContext:
    today: date  # the receiving side's date in Asia/Shanghai
    event_date: str  # name of the type's event date field
    titles: Mapping[str, str]  # field name -> Chinese title


Rule = Callable[[Mapping[str, Any], RuleContext], Iterator[FieldError]]


def as_date(value: Any) -> date | None:
    if isinstance(value, str) and DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def uscc_unless_exempt(data: Mapping[str, Any], ctx: RuleContext) -> Iterator[FieldError]:
    if "uscc" in data or "reg_no" in data or data.get("subject_category") == "natural_person":
        return
    yield FieldError(
        "uscc", "uscc_required",
        "缺少统一社会信用代码：除自然人或已填写工商注册号外必须填写",
        "uscc is required unless the subject is a natural person or reg_no is given",
    )


def event_date_not_future(data: Mapping[str, Any], ctx: RuleContext) -> Iterator[FieldError]:
    value = data.get(ctx.event_date)
    day = as_date(value)
    if day is not None and day > ctx.today:
        title = ctx.titles.get(ctx.event_date, ctx.event_date)
        yield FieldError(
            ctx.event_date, "event_date_not_future",
            f"「{title}」晚于接收日期 {ctx.today.isoformat()}，不能是将来的日期",
            f"'{ctx.event_date}' lies after the receiving date {ctx.today.isoformat()}",
            value,
        )


def valid_range(data: Mapping[str, Any], ctx: RuleContext) -> Iterator[FieldError]:
    start, end = as_date(data.get("valid_from")), as_date(data.get("valid_to"))
    if start and end and end < start:
        yield FieldError(
            "valid_to", "valid_range",
            f"「有效期至」({end}) 早于「有效期自」({start})",
            f"valid_to ({end}) is before valid_from ({start})",
            data.get("valid_to"),
        )


def fine_amount_when_fined(data: Mapping[str, Any], ctx: RuleContext) -> Iterator[FieldError]:
    kinds = data.get("penalty_types")
    if isinstance(kinds, list) and "罚款" in kinds and "fine_amount" not in data:
        yield FieldError(
            "fine_amount", "fine_amount_when_fined",
            "处罚类别含「罚款」时必须填写「罚款金额」",
            "fine_amount is required when penalty_types includes 罚款 (fine)",
        )


def report_year_for_annual_report(data: Mapping[str, Any], ctx: RuleContext) -> Iterator[FieldError]:
    if data.get("disclosure_kind") == "年度报告" and "report_year" not in data:
        yield FieldError(
            "report_year", "report_year_for_annual_report",
            "公示类型为「年度报告」时必须填写「报告年度」",
            "report_year is required when disclosure_kind is 年度报告 (annual report)",
        )


RULES: dict[str, Rule] = {
    rule.__name__: rule
    for rule in (uscc_unless_exempt, event_date_not_future, valid_range, fine_amount_when_fined,
                 report_year_for_annual_report)
}
