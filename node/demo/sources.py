"""The demo departments' own systems: their tables and export folders, and how new rows appear in them."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .sample import AUTHORITIES, JUDICIAL_KINDS, PENALTY_CODES, VIOLATIONS, SampleData, authority_uscc

meta = sa.MetaData()
T = sa.Text

# 市场监督管理局: a registration system with its own table names and column names (pinyin initials)
qydj = sa.Table("qydj", meta, sa.Column("id", sa.Integer, primary_key=True), *(sa.Column(c, T) for c in (
    "qymc", "tyshxydm", "zzjgdm", "qylx", "fddbr", "zczb", "clrq", "zs", "jyfw", "xkjyxm", "djzt", "djjg", "hzrq",
    "xzqh", "lrr", "gxsj")))
xzxk = sa.Table("xzxk", meta, sa.Column("id", sa.Integer, primary_key=True), *(sa.Column(c, T) for c in (
    "xdr_mc", "xdr_lb", "tyshxydm", "xkjdswh", "xkws_mc", "xklb", "xkzs_mc", "xkbh", "xknr", "xkjdrq", "yxqz",
    "yxqzhi", "lrr", "gxsj")))
xzcf = sa.Table("xzcf", meta, sa.Column("id", sa.Integer, primary_key=True), *(sa.Column(c, T) for c in (
    "dsr_mc", "dsr_lb", "tyshxydm", "cfjdswh", "wflx", "wfss", "cfyj", "cflb", "cfnr", "fkje", "cfjdrq", "lrr",
    "gxsj")))
jyyc = sa.Table("jyyc", meta, sa.Column("id", sa.Integer, primary_key=True), *(sa.Column(c, T) for c in (
    "qymc", "tyshxydm", "lrlx", "yy", "jdswh", "jdrq", "gxsj")))
# 严重违法失信企业名单: the same columns as the abnormal-operations list
yzwf = sa.Table("yzwf", meta, sa.Column("id", sa.Integer, primary_key=True), *(sa.Column(c, T) for c in (
    "qymc", "tyshxydm", "lrlx", "yy", "jdswh", "jdrq", "gxsj")))
# 中级人民法院: a judicial publicity table without a usable change time (read as snapshots)
sfgs = sa.Table("sfgs", sa.MetaData(), sa.Column("ah", sa.String(64), primary_key=True), *(sa.Column(c, T) for c in (
    "lx", "dsr", "tyshxydm", "fy", "nr", "je", "cprq", "zt")))
# 食品药品监督管理局: food business licences
spjyxk = sa.Table("spjyxk", sa.MetaData(), sa.Column("xkzbh", sa.String(32), primary_key=True), *(
    sa.Column(c, T) for c in ("jyz_mc", "tyshxydm", "fddbr", "jycs", "ztyt", "jyxm", "xkjdrq", "yxqz", "yxqzhi",
                              "gxsj")))


def stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class DemoSources:
    """Creates the four departments' sources under `root` and adds rows to them on demand."""

    root: Path
    gen: SampleData
    fda_url: str  # PostgreSQL when reachable, else SQLite

    @property
    def amr_url(self) -> str:
        return f"sqlite:///{self.root / 'amr.db'}"

    @property
    def court_url(self) -> str:
        return f"sqlite:///{self.root / 'court.db'}"

    @property
    def tax_folder(self) -> Path:
        return self.root / "tax-drop"

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.tax_folder.mkdir(exist_ok=True)
        for url, md in ((self.amr_url, meta), (self.court_url, sfgs.metadata), (self.fda_url, spjyxk.metadata)):
            engine = sa.create_engine(url)
            md.create_all(engine)
            engine.dispose()

    def grow(self, scale: int = 1) -> dict[str, int]:
        """Add a few rows to every department's source (some wrong on purpose); returns rows added."""
        return {"amr": self._amr(4 * scale), "court": self._court(2 * scale), "tax": self._tax(3 * scale),
                "fda": self._fda(2 * scale)}

    # -- 市场监督管理局 ---------------------------------------------------------------------

    def _amr(self, n: int) -> int:
        g = self.gen
        authority = AUTHORITIES["amr"][0]
        regs, lics, pens, abn, serious = [], [], [], [], []
        for _ in range(n):
            e = g.enterprise()
            day = g.event_date(4)  # registrations, 7 working days: on time
            regs.append({"qymc": e.name, "tyshxydm": g.corrupt_code(e.uscc) if g.chance(0.04) else e.uscc,
                         "zzjgdm": e.org_code, "qylx": enterprise_type(e, g),
                         "fddbr": e.legal_rep, "zczb": str(g.rng.choice([50, 100, 200, 500, 1000, 3000])),
                         "clrq": g.as_source_date(e.established, g.rng.randint(0, 3)), "zs": e.address,
                         "jyfw": "一般项目：日用百货销售；五金产品零售；技术服务、技术开发",
                         "xkjyxm": "食品经营、酒类经营" if g.chance(0.3) else None,
                         "djzt": g.rng.choice(["存续", "存续", "在业", "注销", "吊销"]), "djjg": authority,
                         "hzrq": g.as_source_date(day, g.rng.randint(0, 3)), "xzqh": e.region, "lrr": g.person(),
                         "gxsj": stamp()})
            k = g.known_enterprise()
            valid_from = g.event_date(4)  # licences, 7 working days: on time
            lics.append({"xdr_mc": k.name, "xdr_lb": "法人" if k.category == "legal_person" else "个体",
                         "tyshxydm": k.uscc, "xkjdswh": f"洛市监许〔{valid_from.year}〕{g.rng.randint(1, 9999)}号",
                         "xkws_mc": "准予行政许可决定书", "xklb": g.rng.choice(["普通", "登记", "认可"]),
                         "xkzs_mc": "食品经营许可证", "xkbh": f"JY1410300{g.rng.randint(10 ** 6, 10 ** 7 - 1)}",
                         "xknr": "预包装食品（含冷藏冷冻食品）销售", "xkjdrq": valid_from.isoformat(),
                         "yxqz": valid_from.isoformat(),
                         "yxqzhi": (valid_from + timedelta(days=1826)).isoformat() if not g.chance(0.04)
                         else (valid_from - timedelta(days=10)).isoformat(),  # wrong on purpose: ends before it starts
                         "lrr": g.person(), "gxsj": stamp()})
            if g.chance(0.8):
                v = g.rng.choice(VIOLATIONS)
                codes = sorted(g.rng.sample(["01", "02", "03"], g.rng.randint(1, 2)))
                fined = "02" in codes
                pens.append({"dsr_mc": k.name, "dsr_lb": "法人" if k.category == "legal_person" else "个体",
                             "tyshxydm": k.uscc, "cfjdswh": f"洛市监罚〔{day.year}〕{g.rng.randint(1, 9999)}号",
                             "wflx": v[0], "wfss": v[1], "cfyj": v[2],
                             "cflb": ",".join(codes) if not g.chance(0.04) else "99",  # 99: not in the code table
                             "cfnr": "、".join(PENALTY_CODES[c] for c in codes),
                             "fkje": f"{g.rng.randint(1, 200) / 10:.2f}" if fined else None,
                             "cfjdrq": g.as_source_date(g.event_date(4), g.rng.randint(0, 3)),
                             "lrr": g.person(), "gxsj": stamp()})
            if g.chance(0.3):
                abn.append({"qymc": k.name, "tyshxydm": k.uscc, "lrlx": g.rng.choice(["列入", "列入", "移出"]),
                            "yy": "未依照规定的期限公示年度报告", "jdswh": f"洛市监异〔{day.year}〕{g.rng.randint(1, 999)}号",
                            "jdrq": g.event_date(7).isoformat(), "gxsj": stamp()})
            if g.chance(0.05):  # three years on the abnormal list without meeting the obligations
                serious.append({"qymc": k.name, "tyshxydm": k.uscc, "lrlx": "列入",
                                "yy": "被列入经营异常名录届满3年仍未履行相关义务",
                                "jdswh": f"洛市监严〔{day.year}〕{g.rng.randint(1, 999)}号",
                                "jdrq": g.event_date(7).isoformat(), "gxsj": stamp()})
        engine = sa.create_engine(self.amr_url)
        with engine.begin() as conn:
            for table, batch in ((qydj, regs), (xzxk, lics), (xzcf, pens), (jyyc, abn), (yzwf, serious)):
                if batch:
                    conn.execute(table.insert(), batch)
        engine.dispose()
        return len(regs) + len(lics) + len(pens) + len(abn) + len(serious)

    # -- 中级人民法院 ------------------------------------------------------------------------

    def _court(self, n: int) -> int:
        g = self.gen
        rows = []
        for _ in range(n):
            e = g.known_enterprise()
            day = g.event_date(18)  # judicial publicity, 20 working days: on time
            kind = g.rng.choice(JUDICIAL_KINDS)
            rows.append({"ah": f"（{day.year}）豫03执{g.rng.randint(1, 99999)}号", "lx": kind, "dsr": e.name,
                         "tyshxydm": e.uscc if not g.chance(0.05) else None,  # missing code on purpose
                         "fy": AUTHORITIES["court"][0], "nr": f"{kind}：{e.name}未履行生效法律文书确定的义务",
                         "je": f"{g.rng.randint(5, 500)}.00" if kind != "判决裁定" else None,
                         "cprq": g.as_source_date(day, 0), "zt": "有效"})
        engine = sa.create_engine(self.court_url)
        with engine.begin() as conn:
            conn.execute(sfgs.insert().prefix_with("OR IGNORE"), rows)
            if g.chance(0.3):  # a judgment debtor paid up: the court removes the entry (a retraction at the hub)
                first = conn.execute(sa.select(sfgs.c.ah).order_by(sfgs.c.ah).limit(1)).scalar()
                if first:
                    conn.execute(sfgs.delete().where(sfgs.c.ah == first))
        engine.dispose()
        return len(rows)

    # -- 税务局: exports dropped into a folder ----------------------------------------------

    def _tax(self, n: int) -> int:
        g = self.gen
        tag = datetime.now().strftime("%Y%m%d%H%M%S%f")
        name, code = AUTHORITIES["tax"][0], authority_uscc("tax")
        honors = []
        for _ in range(n):
            e = g.known_enterprise()
            honors.append([e.name, e.uscc, str(g.today.year - 1), g.event_date(18).strftime("%Y/%m/%d"), name])
        _write_atomically(self.tax_folder / f"纳税信用A级纳税人名单_{tag}.csv",
                          lambda path: _csv(path, ["纳税人名称", "统一社会信用代码", "评价年度", "评定日期", "评定机关"],
                                            honors, "gbk"))
        penalties = []
        for i in range(n):
            e = g.known_enterprise()
            penalties.append([i + 1, e.name, e.uscc, f"洛税罚〔{g.today.year}〕{g.rng.randint(1, 9999)}号", "逃避缴纳税款",
                              "少缴增值税及附加税费", "《中华人民共和国税收征收管理法》第六十三条", "罚款", "处少缴税款百分之五十的罚款",
                              round(g.rng.randint(1, 500) / 100, 2),
                              g.event_date(4) if not g.chance(0.05) else "2026年13月40日", name, code])
        _write_atomically(self.tax_folder / f"税务行政处罚_{tag}.xlsx", lambda path: _xlsx(path, [
            "序号", "当事人名称", "统一社会信用代码", "处罚决定书文号", "违法行为类型", "违法事实", "处罚依据", "处罚类别", "处罚内容",
            "罚款金额（万元）", "处罚决定日期", "处罚机关", "处罚机关统一社会信用代码"], penalties))
        return 2 * n

    # -- 食品药品监督管理局: it reports late (decision dates 25–45 days old); the others are on time ----

    def _fda(self, n: int) -> int:
        g = self.gen
        rows = []
        for _ in range(n):
            e = g.known_enterprise()
            day = g.event_date(45, min_age_days=25)  # 7 working days allowed: always late
            rows.append({"xkzbh": f"JY2410300{g.rng.randint(10 ** 6, 10 ** 7 - 1)}", "jyz_mc": e.name,
                         "tyshxydm": e.uscc, "fddbr": e.legal_rep, "jycs": e.address,
                         "ztyt": g.rng.choice(["食品销售经营者（便利店）", "餐饮服务经营者（小型餐馆）"]),
                         "jyxm": "预包装食品销售（含冷藏冷冻食品）；热食类食品制售",
                         "xkjdrq": g.as_source_date(day, g.rng.randint(0, 3)), "yxqz": day.isoformat(),
                         "yxqzhi": (day + timedelta(days=1826)).isoformat(), "gxsj": stamp()})
        engine = sa.create_engine(self.fda_url)
        with engine.begin() as conn:
            conn.execute(spjyxk.insert(), rows)
        engine.dispose()
        return len(rows)


def enterprise_type(e: Any, g: SampleData) -> str:
    """The registration's enterprise type, as its name says it (a 股份有限公司 is no 个人独资企业)."""
    if e.category == "individual_business":
        return "个体工商户"
    if e.name.endswith("股份有限公司"):
        return "股份有限公司（非上市）"
    return g.rng.choice(["有限责任公司（自然人投资或控股）", "有限责任公司（自然人独资）"])


def _write_atomically(path: Path, write: Any) -> None:
    """Exports appear whole: write under a temporary name the drop-folder reader ignores, then rename."""
    part = path.with_name(path.name + ".part")
    write(part)
    os.replace(part, path)


def _csv(path: Path, header: list[str], rows: list[list[Any]], encoding: str) -> None:
    with path.open("w", newline="", encoding=encoding) as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "处罚信息"
    ws.append(header)
    for row in rows:
        ws.append(row)
    with path.open("wb") as fh:
        wb.save(fh)


def authority_columns(dept: str) -> tuple[str, str]:
    return AUTHORITIES[dept][0], authority_uscc(dept)
