"""A public portal served in the test's own event loop, over a generated corpus of Luoyang enterprises.

Records enter through the hub's real ingest, signed by each department's key, and the projections
(search index, credit rules) are caught up before the pages are asked for. Every registration and
several penalties carry a legal representative's ID number, one penalty an ID number in its free text,
one a natural person as subject: the crawl looks for all of them.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from examples import EXAMPLES

from cx.hub.config import HubConfig
from cx.hub.ingest import Inbound, Ingestor
from cx.hub.projections import Projector, hub_projections
from cx.hub.store import Store
from cx.protocol.codes import make_uscc
from cx.protocol.envelope import RecordLine, build_batch
from cx.transport import Topology

if TYPE_CHECKING:
    from console_support import ConsoleHub

# (name, region) of the enterprises the tests look for by name; the rest are generated
TARGET = "洛阳某某商贸有限公司"
NAMED = [(TARGET, "410303"), ("洛阳市某某食品有限公司", "410311"), ("孟津县老城机械厂", "410322"),
         ("孟津区新建建材有限公司", "410308"), ("偃师市牡丹纺织有限公司", "410381"), ("洛阳吉利石化配件有限公司", "410306"),
         ("洛阳一二科技有限公司", "410305")]
WORDS = "华夏 中原 牡丹 龙门 河洛 九都 天元 伊滨 洛浦 嵩岳 白马 瀍河 隋唐 东方 恒信 鼎盛 金桥 宏达 昌盛 新华".split()
TRADES = "商贸 食品 机械 建材 科技 物流 餐饮 纺织 医药 印刷".split()
REGIONS = ["410302", "410303", "410304", "410305", "410307", "410308", "410311", "410323", "410324", "410325",
           "410326", "410327", "410328", "410329", "410381", "410322"]
ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def id_number(i: int) -> str:
    """A resident ID number of valid shape and check character (GB 11643), made up."""
    body = f"410302{1960 + i % 40}{1 + i % 12:02d}{1 + i % 28:02d}{i % 1000:03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, ID_WEIGHTS)) % 11]


@dataclass
class Corpus:
    enterprises: list[dict[str, Any]] = field(default_factory=list)  # code, name, region, reg_no
    ids: set[str] = field(default_factory=set)  # every ID number in the data
    records: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)  # code -> (dept, record_id, type)

    def code_of(self, name: str) -> str:
        return next(e["code"] for e in self.enterprises if e["name"] == name)


def _line(record_id: str, rtype: str, data: dict[str, Any], op: str = "upsert", reason: str | None = None) -> bytes:
    return RecordLine(record_id, rtype, 1, op, None if op == "retract" else data,
                      {"adapter": "test", "locator": f"row {record_id}", "extracted": "2026-01-01T00:00:00.000Z"},
                      reason=reason).to_bytes()


def corpus_lines(count: int, seed: int = 13) -> tuple[Corpus, dict[str, list[tuple[bytes, str]]]]:
    """`count` enterprises (the named ones first) and their records, per department as (line, type)."""
    rnd = random.Random(seed)
    corpus = Corpus()
    out: dict[str, list[tuple[bytes, str]]] = {"amr": [], "court": []}
    names = list(NAMED)
    if count > len(NAMED) + len(WORDS) ** 2 * len(TRADES) // 2:
        raise ValueError(f"{count} enterprises: the generated names do not go that far")
    while len(names) < count:
        name = f"洛阳{rnd.choice(WORDS)}{rnd.choice(WORDS)}{rnd.choice(TRADES)}有限公司"
        if name not in {n for n, _ in names}:
            names.append((name, rnd.choice(REGIONS)))
    for i, (name, region) in enumerate(names):
        code = make_uscc("9", "1", region, f"{i + 1:08d}")
        reg_no = f"410300{i + 1:09d}"
        id_no = id_number(i)
        corpus.ids.add(id_no)
        corpus.enterprises.append({"code": code, "name": name, "region": region, "reg_no": reg_no})
        subject = {"subject_name": name, "subject_category": "legal_person", "uscc": code, "reg_no": reg_no}
        reg = {**copy.deepcopy(EXAMPLES["enterprise_registration"]), **subject, "region": region,
               "legal_rep_id_no": id_no, "approval_date": f"2026-0{1 + i % 9}-1{i % 10}",
               "status": "吊销" if i % 17 == 16 else "存续"}
        add = corpus.records.setdefault(code, [])
        out["amr"].append((_line(f"reg-{i}", "enterprise_registration", reg), "enterprise_registration"))
        add.append(("amr", f"reg-{i}", "enterprise_registration"))
        if i % 3 == 0:  # penalties: the ID number of the legal representative travels with them
            for j in range(2 if i == 0 else 1):
                pen = {**copy.deepcopy(EXAMPLES["administrative_penalty"]), **subject, "legal_rep_id_no": id_no,
                       "decision_no": f"洛市监罚〔2026〕{i * 10 + j}号", "decision_date": f"2026-0{1 + (i + j) % 9}-05",
                       "penalty_types": ["罚款"], "fine_amount": "8.00", "content": "罚款人民币捌万元"}
                pen.pop("publish_until", None)
                if i == 0 and j == 1:
                    pen["facts"] = f"经查，当事人法定代表人（身份证号{id_no}）销售不合格电线。"
                out["amr"].append((_line(f"pen-{i}-{j}", "administrative_penalty", pen), "administrative_penalty"))
                add.append(("amr", f"pen-{i}-{j}", "administrative_penalty"))
        if i % 5 == 1:
            honor = {**copy.deepcopy(EXAMPLES["honor"]), **subject, "conferred_date": "2026-05-01"}
            out["amr"].append((_line(f"hon-{i}", "honor", honor), "honor"))
            add.append(("amr", f"hon-{i}", "honor"))
    target = corpus.enterprises[0]["code"]
    subject = {"subject_name": TARGET, "subject_category": "legal_person", "uscc": target}
    for rtype, rid in (("abnormal_operation", "abn-0"), ("serious_violation", "ser-0")):
        data = {**copy.deepcopy(EXAMPLES[rtype]), **subject, "action": "列入", "decision_date": "2026-06-01"}
        out["amr"].append((_line(rid, rtype, data), rtype))
        corpus.records[target].append(("amr", rid, rtype))
    judicial = {**copy.deepcopy(EXAMPLES["judicial"]), **subject, "decision_date": "2026-07-01"}
    out["court"].append((_line("jud-0", "judicial", judicial), "judicial"))
    corpus.records[target].append(("court", "jud-0", "judicial"))
    person_id = id_number(997)
    corpus.ids.add(person_id)
    person = {**copy.deepcopy(EXAMPLES["administrative_penalty"]), "subject_name": "王小明",
              "subject_category": "natural_person", "legal_rep_id_no": person_id, "decision_date": "2026-08-01",
              "decision_no": "洛市监罚〔2026〕999号"}
    for k in ("uscc", "legal_rep", "publish_until"):
        person.pop(k, None)
    out["amr"].append((_line("pen-person", "administrative_penalty", person), "administrative_penalty"))
    return corpus, out


def ingest(store: Store, hub: ConsoleHub, lines: dict[str, list[tuple[bytes, str]]], node: str = "portal",
           per_batch: int = 200) -> None:
    """Send each department's lines in signed batches through the hub's ingest, then catch up the projections."""
    ingestor = Ingestor(store, hub.key, Topology())
    for dept, items in lines.items():
        prev, seq = None, 0
        for start in range(0, len(items), per_batch):
            chunk = items[start:start + per_batch]
            seq += 1
            batch = build_batch(hub.dept_keys[dept], dept=dept, node=f"{dept}-{node}", seq=seq, prev=prev,
                                lines=[line for line, _ in chunk], schemas={t: 1 for _, t in chunk})
            prev = batch.header_hash
            outcome = ingestor.process(Inbound(batch.to_bytes(), f"{dept}.records", Topology().dept_user(dept), "m"))
            assert outcome.result == "accepted", outcome
    catch_up(store, hub.cfg)


def catch_up(store: Store, cfg: HubConfig) -> None:
    Projector(store, hub_projections(cfg)).catch_up()


PORTAL_CONFIG = """
[portal]
searches_per_minute = {searches}
views_per_minute = {views}
per_page = 5
max_pages = 3
records_per_page = 1
contact = "洛阳市信用办 0379-12345678"
contacts = {{ amr = "洛阳市市场监督管理局 信用修复窗口 0379-65190000" }}
"""


def make_portal_hub(base: Path, store_url: str, count: int = 40, searches: int = 10000,
                    views: int = 10000) -> tuple[ConsoleHub, Corpus]:
    from console_support import make_console_hub  # the hub's web app: imported by the tests that serve it

    hub = make_console_hub(base, store_url, more=PORTAL_CONFIG.format(searches=searches, views=views))
    corpus, lines = corpus_lines(count)
    store = hub.store()
    try:
        ingest(store, hub, lines)
    finally:
        store.dispose()
    return hub, corpus
