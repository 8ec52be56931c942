"""The department node end to end: real sources, the real hub, the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from examples import EXAMPLES
from support import Hub, hub_records, make_node

PENALTY = EXAMPLES["administrative_penalty"]
PENALTY_STREAM = """
[[streams]]
name = "penalties"
source = "db"
type = "administrative_penalty"
table = "xzcf"
key = ["id"]
{mode}
record_id = "{dept}-penalty-{{id}}"
entered_by = "lrr"
[streams.fields]
subject_name = "dsr_mc"
subject_category = {{ const = "legal_person" }}
uscc = "tyshxydm"
authority = {{ const = "%s" }}
authority_uscc = {{ const = "%s" }}
decision_no = "cfjdswh"
violation_type = "wflx"
facts = "wfss"
legal_basis = "cfyj"
penalty_types = {{ column = "cflb", map = "penalty_codes" }}
content = "cfnr"
fine_amount = "fkje"
decision_date = "cfjdrq"
[code_tables.penalty_codes]
"01" = "警告"
"02" = "罚款"
""" % (PENALTY["authority"], PENALTY["authority_uscc"])

xzcf = sa.Table(
    "xzcf", sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("dsr_mc", sa.String(200)), sa.Column("tyshxydm", sa.String(18)), sa.Column("cfjdswh", sa.String(100)),
    sa.Column("wflx", sa.String(100)), sa.Column("wfss", sa.Text), sa.Column("cfyj", sa.Text),
    sa.Column("cflb", sa.String(50)), sa.Column("cfnr", sa.Text), sa.Column("fkje", sa.Numeric(12, 2)),
    sa.Column("cfjdrq", sa.String(20)), sa.Column("updated_at", sa.DateTime), sa.Column("lrr", sa.String(50)),
)


def penalty_row(i: int, *, invalid: bool = False, stamp: str = "2026-03-01 10:00:00") -> dict:
    from datetime import datetime

    return {"id": i, "dsr_mc": f"洛阳测试{i}商贸有限公司", "tyshxydm": PENALTY["uscc"], "cfjdswh": f"洛市监罚〔2026〕{i}号",
            "wflx": "虚假宣传", "wfss": "发布虚假广告", "cfyj": "《中华人民共和国广告法》第五十五条",
            "cflb": "99" if invalid else "01、02", "cfnr": "警告并罚款", "fkje": "1.50", "cfjdrq": "2026/3/1",
            "updated_at": datetime.fromisoformat(stamp), "lrr": "张三"}


def fill(url: str, rows: list[dict]) -> sa.Engine:
    engine = sa.create_engine(url)
    xzcf.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(xzcf.insert(), rows)
    return engine


def sources(url: str) -> str:
    return f'[sources.db]\nadapter = "sql"\nurl = "{url}"\n'


@pytest.fixture
def sql_source(request, tmp_path):
    """A source database URL of the requested kind, created for the test and dropped after."""
    import pymysql

    from support import create_pg_database, drop_pg_database, unique

    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'source.db'}"
    elif kind == "postgresql":
        db = create_pg_database()
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
        sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}").dispose()
        drop_pg_database(db)
    else:
        name = unique("cxsrc_")
        admin = pymysql.connect(host="127.0.0.1", user="root", password="")
        admin.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.mark.parametrize("sql_source", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_sql_source_rows_arrive_exactly_once(hub_factory, sql_source, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    rows = [penalty_row(i, invalid=(i % 10 == 0)) for i in range(1, 401)]
    engine = fill(sql_source, rows)
    node = make_node(hub, "amr", tmp_path / "node", sources(sql_source) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"),
                     delivery="batch_max_records = 100")
    check = node.cx("check")
    assert check.returncode == 1  # 40 invalid rows
    assert "valid 合格 360" in check.stdout and "code_table" in check.stdout and "table xzcf id=10" in check.stdout
    assert list((node.dir / "reports").glob("rejections-*.xlsx"))
    done = node.once()
    assert done.returncode == 0, done.stderr[-3000:]
    held = hub_records(hub, "amr")
    assert set(held) == {f"amr-penalty-{i}" for i in range(1, 401) if i % 10}
    assert all(r["versions"] == 1 for r in held.values())
    status = node.status()
    assert status["outbox"]["delivered"] == 360 and status["outbox"]["rejections_open"] == 40
    rejections = json.loads(node.cx("rejections", "--format", "json").stdout)
    assert {r["locator"] for r in rejections} == {f"table xzcf id={i}" for i in range(10, 401, 10)}
    # a second run sends nothing; a fixed row and a changed row go as new versions
    assert node.once().returncode == 0
    with engine.begin() as conn:
        conn.execute(xzcf.update().where(xzcf.c.id == 10).values(cflb="01", updated_at=sa.func.now()))
        conn.execute(xzcf.update().where(xzcf.c.id == 11).values(fkje="2.00", updated_at=sa.func.now()))
    engine.dispose()
    assert node.once().returncode == 0
    held = hub_records(hub, "amr")
    assert held["amr-penalty-10"]["versions"] == 1 and held["amr-penalty-11"]["versions"] == 2
    assert len(held) == 361
    assert node.status()["outbox"]["rejections_open"] == 39
