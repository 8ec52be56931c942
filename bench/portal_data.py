"""A portal-sized hub store: generated Luoyang enterprises and their records, stored the way the hub stores them.

    python bench/portal_data.py --enterprises 1000000 --records 5000000 --store sqlite|postgresql --dir DIR

Every record travels as the hub receives it: record lines in batches of 5,000 signed by the department's key,
through the hub's own `Ingestor` (signature and Merkle root checked, records, versions, ledger, checkpoints
and signed receipts stored in one transaction per batch). The one shortcut: the per-field schema check is
skipped, as the generator only writes what the data dictionary allows (`--validate` puts it back; the test
runs with it). Then the hub's own projections (`hub_projections`: timeliness, the portal's search index, the
warning classes and lists) catch up through the `Projector`, exactly as a running hub would, so the portal
serves what a hub that had received these records from the departments would serve.

The corpus: one registration per enterprise (市场监督管理局), then licences, inspections, penalties,
mortgages, pledges, annual reports, abnormal-operation and serious-violation list decisions, A-grade
taxpayer honours, court records; most enterprises have a handful, one in a thousand has hundreds (the
pages must paginate). Names are varied enough that a substring finds from one to thousands of enterprises.
A few penalties are withdrawn again, some of them as credit repair (信用修复).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cx.demo.sample import AUTHORITIES, LUOYANG_REGIONS, RETIRED_REGIONS, authority_uscc, make_id_number
from cx.hub import registry
from cx.hub.config import HubConfig
from cx.hub.ingest import Checked, Inbound, Ingestor
from cx.hub.projections import Projector, hub_projections
from cx.hub.store import Store, copy_rows, metadata, schema_version
from cx.protocol.codes import USCC_ALPHABET, make_uscc
from cx.protocol.envelope import RecordLine, build_batch, content_hash, parse_record_line
from cx.protocol.keys import SigningKey
from cx.transport import Topology

BATCH = 5000
DEPARTMENTS = {
    "amr": "洛阳市市场监督管理局",
    "court": "河南省洛阳市中级人民法院",
    "tax": "国家税务总局洛阳市税务局",
    "fda": "洛阳市食品药品监督管理局",
}
# characters of trade names (字号): two of them make about 40,000 names, with the industry and form millions
TRADE_CHARS = ("鼎盛华夏中原牡丹龙门河洛汇通宏达天瑞金源丰恒信博远九州隋唐伊嵩岳新科正阳同德浦明堂白马关林周王定应"
               "丽景青要东方祥泰安康富民兴旺昌隆永成福聚德兆顺和美佳豪宇晨星辉光耀亿嘉诚实业创联合众利鑫海洋森茂"
               "林荣华腾飞跃锦绣春秋万家乐达凯旋胜君豪盈致远晟翔睿智峰峻骏驰盛世银泰润泽宁")
INDUSTRIES = ("商贸", "科技", "建材", "食品", "餐饮管理", "汽车销售", "物流", "医药连锁", "农业开发", "文化传媒", "机械制造",
              "矿业", "新能源", "电子商务", "旅游开发", "钢结构工程", "轴承", "耐火材料", "牡丹文化", "建筑工程", "房地产开发",
              "环保科技", "信息技术", "教育咨询", "劳务派遣", "物业管理", "装饰工程", "化工", "纺织", "印刷")
# how names begin: the city, the province, or the district or county (the load tool strips these to find trade names)
PLACES = ("洛阳", "洛阳市", "河南", *LUOYANG_REGIONS.values())
FORMS = ("有限公司", "有限公司", "有限责任公司", "股份有限公司", "商贸行", "经营部")
SHOPS = ("烩面馆", "水席馆", "不翻汤", "便利店", "五金店", "理发店", "药店", "服装店", "家电维修部", "粮油店", "汤馆", "超市")
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂建华志红玉晓东海燕俊峰"
STREETS = ("中州中路", "九都路", "凯旋路", "定鼎北路", "王城大道", "开元大道", "建设路", "涧河路", "西苑路", "龙门大道")
# (type, dept, weight) of the records an enterprise gathers after its registration
EXTRA = (("administrative_license", "amr", 20), ("administrative_license", "fda", 10), ("inspection", "amr", 15),
         ("inspection", "fda", 5), ("administrative_penalty", "amr", 8), ("administrative_penalty", "tax", 5),
         ("administrative_penalty", "fda", 3), ("honor", "tax", 6), ("judicial", "court", 8),
         ("chattel_mortgage", "amr", 4), ("equity_pledge", "amr", 3), ("ip_registration", "amr", 1),
         ("self_disclosure", "amr", 8), ("abnormal_operation", "amr", 3), ("serious_violation", "amr", 0.3),
         ("support_policy", "amr", 1), ("consumer_warning", "amr", 0.5))
HEAVY_SHARE = 0.001  # enterprises with hundreds of records
REPAIR = "信用修复：当事人已履行行政处罚决定并完成整改，经申请准予修复"


@dataclass
class Enterprise:
    index: int
    name: str
    uscc: str
    reg_no: str
    region: str
    category: str
    legal_rep: str
    established: date


@dataclass
class Corpus:
    """A seeded generator of enterprises and record lines; the same seed gives the same corpus."""

    enterprises: int
    records: int
    seed: int = 2016
    today: date = field(default_factory=date.today)
    rng: random.Random = field(init=False)
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.regions = list(LUOYANG_REGIONS)
        self.types, self.weights = [(t, d) for t, d, _ in EXTRA], [w for _, _, w in EXTRA]
        self.stride = 7919 * 104729  # coprime with 31: codes are a permutation of the indexes

    def enterprise(self, i: int) -> Enterprise:
        rng = self.rng
        region = rng.choice(RETIRED_REGIONS) if rng.random() < 0.15 else rng.choice(self.regions)
        rep = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
        n = (i * self.stride + 12345) % 31 ** 6
        org8 = "MA" + "".join(USCC_ALPHABET[n // 31 ** k % 31] for k in range(5, -1, -1))
        individual = rng.random() < 0.2
        if individual:
            name = f"{LUOYANG_REGIONS[region]}{rep[0]}记{rng.choice(SHOPS)}"
            code = make_uscc("9", "2", region, org8)
        else:
            place = rng.choice(("洛阳", "洛阳市", "洛阳", LUOYANG_REGIONS[region], "河南"))
            trade = "".join(rng.choice(TRADE_CHARS) for _ in range(rng.choice((2, 2, 2, 3))))
            name = f"{place}{trade}{rng.choice(INDUSTRIES)}{rng.choice(FORMS)}"
            code = make_uscc("9", "1", region, org8)
        established = self.today - timedelta(days=rng.randint(30, 9000))
        return Enterprise(i, name, code, f"{region}{i:09d}", region,
                          "individual_business" if individual else "legal_person", rep, established)

    def extra_count(self, done_enterprises: int, done_records: int) -> int:
        """Records after the registration, drawn so the total lands near the target."""
        left_e = self.enterprises - done_enterprises
        left_r = self.records - done_records - left_e  # each enterprise left still needs its registration
        if left_e <= 1:
            return max(0, left_r)
        mean = max(0.0, left_r / left_e)
        if self.rng.random() < HEAVY_SHARE and mean > 1:
            return min(left_r, self.rng.randint(200, 1500))
        return min(left_r, int(self.rng.expovariate(1 / mean)) if mean else 0)

    def event_date(self, e: Enterprise) -> date:
        start = max(e.established, self.today - timedelta(days=6 * 365))
        return start + timedelta(days=self.rng.randint(0, (self.today - start).days))

    def next_id(self, dept: str, kind: str) -> str:
        key = f"{dept}-{kind}"
        self.counters[key] = self.counters.get(key, 0) + 1
        return f"{key}-{self.counters[key]}"

    def lines(self) -> Iterator[tuple[str, RecordLine]]:
        """(dept, record line) for every record, enterprise by enterprise."""
        made = 0
        for i in range(self.enterprises):
            e = self.enterprise(i)
            yield "amr", self.line("amr", f"amr-reg-{i}", "enterprise_registration", self.registration(e))
            extra = self.extra_count(i, made)
            made += 1 + extra
            for (kind, dept) in self.rng.choices(self.types, self.weights, k=extra):
                data = self.record(kind, dept, e)
                record_id = self.next_id(dept, kind)
                yield dept, self.line(dept, record_id, kind, data)
                if kind == "administrative_penalty" and self.rng.random() < 0.02:
                    repaired = self.rng.random() < 0.5
                    yield dept, RecordLine(record_id, kind, 1, "retract", None, self.source(record_id),
                                           REPAIR if repaired else "录入错误，撤销")

    def source(self, record_id: str) -> dict[str, Any]:
        return {"adapter": "bench", "locator": record_id, "extracted": "2026-01-01T00:00:00.000Z"}

    def line(self, dept: str, record_id: str, kind: str, data: dict[str, Any]) -> RecordLine:
        return RecordLine(record_id, kind, 1, "upsert", data, self.source(record_id))

    def subject(self, e: Enterprise) -> dict[str, Any]:
        return {"subject_name": e.name, "subject_category": e.category, "uscc": e.uscc}

    def authority(self, dept: str) -> dict[str, Any]:
        return {"authority": AUTHORITIES[dept][0], "authority_uscc": authority_uscc(dept)}

    def registration(self, e: Enterprise) -> dict[str, Any]:
        rng = self.rng
        return {**self.subject(e), "reg_no": e.reg_no, "org_code": e.uscc[8:17], "legal_rep": e.legal_rep,
                "legal_rep_id_type": "居民身份证",
                "legal_rep_id_no": make_id_number(rng, e.region, e.established.year - rng.randint(22, 60)),
                "enterprise_type": "个体工商户" if e.category == "individual_business"
                else rng.choice(("有限责任公司（自然人投资或控股）", "有限责任公司（自然人独资）", "股份有限公司（非上市）")),
                "registered_capital": f"{rng.choice((10, 50, 100, 200, 500, 1000, 5000))}.00",
                "established_date": e.established.isoformat(),
                "address": f"河南省洛阳市{LUOYANG_REGIONS[e.region]}{rng.choice(STREETS)}{rng.randint(1, 300)}号",
                "business_scope": "一般项目：日用百货销售；五金产品零售；技术服务、技术开发",
                "status": rng.choices(("存续", "在业", "吊销", "注销", "迁出"), (70, 15, 5, 8, 2))[0],
                "registration_authority": AUTHORITIES["amr"][0], "approval_date": e.established.isoformat(),
                "region": e.region}

    def record(self, kind: str, dept: str, e: Enterprise) -> dict[str, Any]:
        rng, day = self.rng, self.event_date(e)
        d, year, no = day.isoformat(), day.year, rng.randint(1, 9999)
        subject = self.subject(e)
        if kind == "administrative_license":
            return {**subject, **self.authority(dept), "decision_doc_name": "准予行政许可决定书",
                    "decision_no": f"洛市监许〔{year}〕{no}号", "license_category": rng.choice(("普通", "登记", "认可")),
                    "certificate_name": "食品经营许可证", "license_no": f"JY1410300{rng.randint(10 ** 6, 10 ** 7 - 1)}",
                    "content": "预包装食品（含冷藏冷冻食品）销售", "decision_date": d, "valid_from": d,
                    "valid_to": (day + timedelta(days=1826)).isoformat()}
        if kind == "inspection":
            return {**subject, "inspection_kind": rng.choice(("定向抽查", "不定向抽查", "专项检查")),
                    "inspection_date": d, "result": rng.choice(("未发现问题", "未发现问题", "责令整改", "通过登记的住所无法联系"))}
        if kind == "administrative_penalty":
            kinds = rng.choice((["警告"], ["通报批评"], ["罚款"], ["警告", "罚款"], ["罚款", "没收违法所得"],
                                ["吊销许可证件"], ["限制从业"], ["责令停产停业", "罚款"]))
            data = {**subject, **self.authority(dept), "decision_no": f"洛罚〔{year}〕{no}号",
                    "violation_type": "销售不合格产品", "facts": "经查，当事人销售不合格产品。",
                    "legal_basis": "《中华人民共和国产品质量法》第四十九条", "penalty_types": kinds,
                    "content": "、".join(kinds), "decision_date": d}
            if "罚款" in kinds:
                data["fine_amount"] = f"{rng.choice((0.2, 0.5, 1, 2, 4.8, 5, 10, 20, 50))}"
            if "限制从业" in kinds:
                data["valid_until"] = (day + timedelta(days=365 * rng.randint(1, 5))).isoformat()
            if rng.random() < 0.05:
                data["publish_until"] = (day + timedelta(days=rng.choice((90, 365, 1095)))).isoformat()
            return data
        if kind == "honor":
            return {**subject, "honor_name": f"{year - 1}年度纳税信用A级纳税人", "level": "市级",
                    "conferred_by": AUTHORITIES["tax"][0], "conferred_date": d}
        if kind == "judicial":
            judicial = rng.choice(("失信被执行人", "股权冻结", "判决裁定", "股东变更协助执行"))
            return {**subject, "judicial_kind": judicial, "case_no": f"（{year}）豫03执{rng.randint(1, 99999)}号",
                    "court": AUTHORITIES["court"][0], "content": f"{judicial}：{e.name}", "amount": f"{rng.randint(5, 500)}",
                    "decision_date": d, "status": "有效"}
        if kind == "chattel_mortgage":
            return {**subject, "registration_no": f"DY{year}-{no:05d}", "registration_authority": AUTHORITIES["amr"][0],
                    "secured_amount": f"{rng.randint(10, 5000)}", "mortgagee": "洛阳银行股份有限公司",
                    "collateral": "生产设备一批", "registration_date": d, "status": rng.choice(("有效", "注销"))}
        if kind == "equity_pledge":
            return {**subject, "registration_no": f"41030020{year}{no:05d}", "pledgor": e.legal_rep,
                    "pledged_amount": f"{rng.randint(10, 1000)}", "pledgee": "中原银行股份有限公司洛阳分行",
                    "registration_date": d, "status": "有效"}
        if kind == "ip_registration":
            return {**subject, "ip_kind": rng.choice(("商标", "专利")), "registration_no": f"ZC{year}{no:05d}",
                    "ip_name": e.name[2:6], "pledgor": e.name, "pledgee": "洛阳银行股份有限公司",
                    "registration_date": d, "status": "有效"}
        if kind == "self_disclosure":
            return {**subject, "disclosure_kind": "年度报告", "report_year": year - 1,
                    "content": {"employees": rng.randint(1, 300)}, "disclosed_date": d}
        if kind == "abnormal_operation":
            return {**subject, **self.authority("amr"), "action": rng.choice(("列入", "列入", "移出")),
                    "reason": "未依照规定的期限公示年度报告", "decision_no": f"洛市监异〔{year}〕{no}号", "decision_date": d}
        if kind == "serious_violation":
            return {**subject, **self.authority("amr"), "action": "列入",
                    "reason": "被列入经营异常名录届满3年仍未履行相关义务", "decision_no": f"洛市监严〔{year}〕{no}号",
                    "decision_date": d}
        if kind == "support_policy":
            return {**subject, **self.authority(dept), "policy_name": "小微企业创业扶持", "support_content": "创业补贴",
                    "amount": f"{rng.randint(1, 50)}.00", "decision_date": d}
        if kind == "consumer_warning":
            return {**subject, "title": "关于预付卡消费的提示", "content": "请谨慎办理预付卡。", "issue_date": d}
        raise ValueError(kind)


def say(text: str) -> None:
    print(text, flush=True)


class PreChecked(Ingestor):
    """The hub's ingest without the per-field schema check: the corpus only writes what the dictionary allows."""

    def check_records(self, batch: Any) -> list[Checked]:
        out = []
        for index, line in enumerate(batch.lines):
            record = parse_record_line(line, self.limits)
            out.append(Checked(index, record, content_hash(record)))
        return out


@dataclass
class Loaded:
    enterprises: int
    records: int
    versions: int
    batches: int
    ingest_seconds: float
    projection_seconds: float
    projected: int


def enrol(store: Store) -> dict[str, SigningKey]:
    """The four departments and their keys (kept only in memory: nothing more will be signed with them)."""
    keys = {}
    for dept, name in DEPARTMENTS.items():
        keys[dept] = SigningKey.generate()
        registry.add_department(store, dept, name, "410300", keys[dept].public, node_ids=(f"{dept}-1",))
    return keys


def load(store: Store, cfg: HubConfig, corpus: Corpus, *, validate: bool = False,
         progress: Callable[[str], None] = say) -> Loaded:
    """Ingest the corpus through the hub's ingest, then bring the hub's projections up to date."""
    topology = cfg.topology
    keys = enrol(store)
    ingestor = (Ingestor if validate else PreChecked)(store, SigningKey.load(cfg.hub.signing_key), topology)
    pending: dict[str, list[bytes]] = {d: [] for d in DEPARTMENTS}
    types: dict[str, set[str]] = {d: set() for d in DEPARTMENTS}
    chain: dict[str, tuple[int, str | None]] = {d: (0, None) for d in DEPARTMENTS}
    counts = {"versions": 0, "batches": 0, "accepted": 0}
    started = time.perf_counter()

    def send(dept: str) -> None:
        seq, prev = chain[dept]
        batch = build_batch(keys[dept], dept=dept, node=f"{dept}-1", seq=seq + 1, prev=prev, lines=pending[dept],
                            schemas={t: 1 for t in types[dept]})
        outcome = ingestor.process(Inbound(batch.to_bytes(), f"{dept}.batch", topology.dept_user(dept)))
        if outcome.result != "accepted" or outcome.rejected:
            raise RuntimeError(f"batch {seq + 1} of {dept} not accepted whole: {outcome.result} {outcome.detail} "
                               f"rejected {outcome.rejected}")
        chain[dept] = (seq + 1, batch.header_hash)
        counts["batches"] += 1
        counts["accepted"] += outcome.accepted
        pending[dept], types[dept] = [], set()

    for dept, line in corpus.lines():
        pending[dept].append(line.to_bytes())
        types[dept].add(line.type)
        counts["versions"] += 1
        if len(pending[dept]) >= BATCH:
            send(dept)
            if counts["batches"] % 20 == 0:
                rate = counts["versions"] / (time.perf_counter() - started)
                progress(f"  ingested {counts['versions']:,} versions ({rate:,.0f}/s)")
    for dept in DEPARTMENTS:
        if pending[dept]:
            send(dept)
    ingest_seconds = time.perf_counter() - started

    started = time.perf_counter()
    last = [0.0]

    def report(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            progress(f"  projected {done:,} of {total:,} versions")

    projected = Projector(store, hub_projections(cfg)).catch_up(report)
    records = sum(corpus.counters.values()) + corpus.enterprises
    return Loaded(corpus.enterprises, records, counts["versions"], counts["batches"], ingest_seconds,
                  time.perf_counter() - started, projected)


def copy_store(source: Store, target: Store, progress: Callable[[str], None] = say) -> dict[str, int]:
    """Every table of the hub's schema, row for row, into an empty store (PostgreSQL: COPY, one pass per table).

    Generating a corpus through ingest takes most of an hour; the second store of the benchmark gets the same
    rows, stored versions, ledger, checkpoints and projection tables with their positions, in minutes.
    """
    counts = {}
    for table in metadata.sorted_tables:
        if table is schema_version:
            continue
        columns = [c.name for c in table.columns]
        started = time.perf_counter()
        with source.reader.connect() as src, target.writer.begin() as dst:
            for index in table.indexes:  # built once after the rows, not row by row
                index.drop(dst)
            result = src.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {table.name}")
            n = 0
            while rows := result.fetchmany(20_000):
                copy_rows(dst, table, [dict(zip(columns, row)) for row in rows])
                n += len(rows)
            for index in table.indexes:
                index.create(dst)
            if dst.dialect.name == "postgresql":
                for column in table.primary_key.columns:
                    if column.autoincrement is True:  # the next id a hub takes must follow the copied ones
                        dst.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                                            f"GREATEST(1, (SELECT MAX({column.name}) FROM {table.name})))")
        counts[table.name] = n
        if n:
            progress(f"  copied {table.name}: {n:,} rows in {time.perf_counter() - started:.0f} s")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the hub.toml whose store and key to fill")
    parser.add_argument("--enterprises", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=2016)
    parser.add_argument("--validate", action="store_true", help="run the hub's full schema check on every record")
    parser.add_argument("--copy-from", metavar="URL", help="instead of generating, copy the store at URL (a corpus "
                        "made before) row for row into this hub's store")
    args = parser.parse_args()
    cfg = HubConfig.load(args.config)
    store = Store(cfg.store_url, sqlite_synchronous="OFF")
    store.migrate()
    try:
        if args.copy_from:
            source = Store(args.copy_from)
            try:
                print(json.dumps(copy_store(source, store), indent=1))
            finally:
                source.dispose()
            return 0
        loaded = load(store, cfg, Corpus(args.enterprises, args.records, args.seed), validate=args.validate)
    finally:
        store.dispose()
    print(json.dumps(loaded.__dict__, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
