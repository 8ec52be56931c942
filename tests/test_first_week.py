"""A department's first week (issue 9): the mistakes people make, each reproduced against a real hub and broker.

A mapping typo stops the node before it reads; rows rejected at the department are read again when the
mapping changes or staff ask; two nodes of one department each settle their own records; the handover
file is the whole configuration (a hub with another user prefix included); a node that cannot get a
consistency proof says "not yet verified", not "tampered"; a wrong password is named as such; open
alerts make /healthz answer 503; local rejections reach the hub's dashboard; the drop folder names the
encoding of a file it cannot read.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from cx.handover import Handover
from cx.protocol.keys import SigningKey
from cx.protocol.merkle import merkle_root
from cx.protocol.receipts import Checkpoint, Receipt
from cx.transport import Topology
from examples import EXAMPLES
from support import Hub, free_port, healthz, hub_records, make_hub, make_node, run_sync, unique
from test_node import (
    CSV_HEADER, DROP, PENALTY_STREAM, REJECTED_HERE, csv_row, delivered, fill, outbox_rows, penalty_row,
    publish_receipts, sent_batches, sources, sql_source, wait_settled, wait_until, xzcf,
)  # noqa: F401 - sql_source is a fixture

PENALTY = EXAMPLES["administrative_penalty"]
CONFIG_PROBLEM = 3  # `cx node check` and `cx node run`: the configuration cannot work, nothing was read
UNDELIVERED = 1


def cursor_stream(dept: str = "amr") -> str:
    return PENALTY_STREAM.format(mode='cursor = "updated_at"', dept=dept)


def problem_lines(text: str) -> list[str]:
    """The configuration problems a report lists (one line each)."""
    return [line.strip() for line in text.splitlines() if line.startswith("  [")]


# -- 1. a typo in a mapped column ----------------------------------------------------------------------

@pytest.mark.parametrize("sql_source", ["sqlite", "postgresql"], indirect=True)
def test_a_mapping_typo_stops_check_and_run_before_anything_is_read(hub_factory, sql_source, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    fill(sql_source, [penalty_row(i) for i in range(1, 27)]).dispose()
    typo = cursor_stream().replace('subject_name = "dsr_mc"', 'subject_name = "dsr_mcc"')
    node = make_node(hub, "amr", tmp_path / "node", sources(sql_source) + typo)

    check = node.cx("check")
    assert check.returncode == CONFIG_PROBLEM, check.stdout + check.stderr
    assert "fields.subject_name" in check.stderr and "数据源中没有列「dsr_mcc」" in check.stderr
    assert "the source has no column 'dsr_mcc' (did you mean 'dsr_mc'?)" in check.stderr
    run = node.once()
    assert run.returncode == CONFIG_PROBLEM, run.stderr[-3000:]
    assert problem_lines(run.stderr) == problem_lines(check.stderr) and problem_lines(run.stderr)
    assert "nothing was read" in run.stderr
    assert not (node.dir / "outbox.db").exists()  # not a row read, not a position moved

    node.config.write_text(node.config.read_text().replace("dsr_mcc", "dsr_mc"))
    assert node.cx("check").returncode == 0
    delivered(node.once())
    assert set(hub_records(hub, "amr")) == {f"amr-penalty-{i}" for i in range(1, 27)}


def test_other_configuration_mistakes_stop_the_node_with_the_same_words(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url, [penalty_row(1)]).dispose()
    mistakes = {
        "an unknown record type": (cursor_stream().replace('type = "administrative_penalty"',
                                                           'type = "administrative_penalti"'),
                                   "unknown record type 'administrative_penalti'"),
        "an unknown field": (cursor_stream().replace('facts = "wfss"', 'facts = "wfss"\nfact = "wfss"'),
                             "record type administrative_penalty has no field 'fact' (did you mean 'facts'?"),
        "a required field left out": (cursor_stream().replace('legal_basis = "cfyj"\n', ""),
                                      "the required field 'legal_basis'"),
        "a code table value the schema refuses": (cursor_stream().replace('"02" = "罚款"', '"02" = "罚金"'),
                                                  "maps to values the field does not allow: ['罚金']"),
        "a key column the table lacks": (cursor_stream().replace('key = ["id"]', 'key = ["idd"]'),
                                         "has no key 主键 column 'idd'"),
    }
    for i, (what, (stream, said)) in enumerate(mistakes.items()):
        node = make_node(hub, "amr", tmp_path / f"node{i}", sources(url) + stream)
        for command in (("check",), ("run", "--once")):
            done = node.cx(*command)
            assert done.returncode == CONFIG_PROBLEM and said in done.stderr, (what, command, done.stderr[-2000:])
    # the node's own files: an unreadable signing key, a handover that does not parse or is another node's
    node = make_node(hub, "amr", tmp_path / "files", sources(url) + cursor_stream())
    os.chmod(node.dir / "keys" / "amr.key", 0o644)
    done = node.cx("run", "--once")
    assert done.returncode == CONFIG_PROBLEM and "[node] signing_key" in done.stderr and "chmod 600" in done.stderr
    os.chmod(node.dir / "keys" / "amr.key", 0o600)
    handover = node.dir / "secrets" / "handover.toml"
    good = handover.read_text()
    handover.write_text(good.replace('format = "cx-handover/1"', 'format = "cx-handover/1'))
    done = node.cx("run", "--once")
    assert done.returncode == CONFIG_PROBLEM and "not a handover file" in done.stderr
    handover.write_text(good.replace('node_id = "amr-1"', 'node_id = "amr-2"'))
    done = node.cx("run", "--once")
    assert done.returncode == CONFIG_PROBLEM and "is for node 'amr-2'" in done.stderr
    handover.write_text(good)
    node.config.write_text(node.config.read_text().replace("[delivery]", "[delivery\n"))  # not TOML any more
    for command in (("check",), ("run", "--once"), ("retry",)):
        done = node.cx(*command)
        assert done.returncode == CONFIG_PROBLEM and "not valid TOML" in done.stderr, (command, done.stderr)
    assert not (node.dir / "outbox.db").exists()


# -- 1. rejected rows are recoverable --------------------------------------------------------------------

@pytest.mark.parametrize("sql_source", ["sqlite", "postgresql"], indirect=True)
def test_rejected_rows_are_read_again_when_the_mapping_changes_or_staff_ask(hub_factory, sql_source, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    engine = fill(sql_source, [penalty_row(i, invalid=i % 3 == 0) for i in range(1, 40)])  # 13 with code 99
    node = make_node(hub, "amr", tmp_path / "node", sources(sql_source) + cursor_stream())
    done = node.once()
    assert done.returncode == REJECTED_HERE
    assert "DELIVERED, BUT 13 row(s) were rejected here" in done.stderr and "cx node retry" in done.stderr
    assert len(hub_records(hub, "amr")) == 26
    assert node.status()["outbox"]["rejections_open_local"] == 13

    # the mapping changes (a code added): the rows rejected before are read again by their keys
    node.config.write_text(node.config.read_text().replace('"02" = "罚款"', '"02" = "罚款"\n"99" = "其他"'))
    done = node.once()
    assert done.returncode == 0 and "all delivered" in done.stderr, done.stderr[-3000:]
    held = hub_records(hub, "amr")
    assert set(held) == {f"amr-penalty-{i}" for i in range(1, 40)} and all(r["versions"] == 1 for r in held.values())

    # rows fixed at the source without their change time moving (the cursor will not see them): staff ask
    later = "2026-03-05 10:00:00"
    with engine.begin() as conn:
        conn.execute(xzcf.insert(), [{**penalty_row(i, stamp=later), "tyshxydm": "91410300MA44XXXX0X"}
                                     for i in range(40, 46)])
    delivered(node.once(), REJECTED_HERE)
    with engine.begin() as conn:
        conn.execute(xzcf.update().where(xzcf.c.id.in_([40, 41, 42, 43, 44])).values(tyshxydm=PENALTY["uscc"]))
        conn.execute(xzcf.delete().where(xzcf.c.id == 45))
    engine.dispose()
    delivered(node.once(), REJECTED_HERE)  # the cursor sees nothing new
    retried = node.cx("retry")
    assert retried.returncode == 0, retried.stderr
    assert "6 rejected row(s)" in retried.stdout and "5 now valid" in retried.stdout
    assert "1 no longer at the source" in retried.stdout
    delivered(node.once())
    assert set(hub_records(hub, "amr")) == {f"amr-penalty-{i}" for i in range(1, 45)}
    assert node.status()["outbox"]["rejections_open"] == 0


def test_drop_folder_rows_rejected_for_a_typo_arrive_once_it_is_fixed(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    typo = DROP.replace('subject_name = "当事人名称"', 'subject_name = "当事人名"')  # a drop folder's columns: only files tell
    node = make_node(hub, "amr", tmp_path / "node", typo)
    drop = node.dir / "drop"
    drop.mkdir()
    with (drop / "处罚决定.csv").open("w", encoding="gbk", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        writer.writerows(csv_row(i) for i in range(1, 11))
    done = node.once()
    assert done.returncode == REJECTED_HERE and "10 row(s) were rejected here" in done.stderr
    assert (drop / "processed" / "处罚决定.csv").exists()
    assert hub_records(hub, "amr") == {}
    node.config.write_text(node.config.read_text().replace('"当事人名"', '"当事人名称"'))
    delivered(node.once())  # read again from processed/, by the file's hash and the rows' keys
    assert set(hub_records(hub, "amr")) == {f"amr-cf-{i}" for i in range(1, 11)}


# -- 8. the drop folder tells the truth about encodings ----------------------------------------------------

def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)  # lines end in CRLF, as Excel writes them
    return out.getvalue()


def test_drop_folder_names_the_file_the_line_and_the_encoding(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    node = make_node(hub, "amr", tmp_path / "node", DROP)
    drop = node.dir / "drop"
    drop.mkdir()
    text = csv_text([CSV_HEADER, *(csv_row(i) for i in range(1, 6))])
    lines = text.encode("utf-8").split(b"\r\n")
    lines[1] = lines[1].replace("测试".encode(), "测试".encode("gbk"))  # a paste from a GBK program, on line 2
    (drop / "处罚-utf8损坏.csv").write_bytes(b"\r\n".join(lines))
    (drop / "处罚-big5.csv").write_bytes(csv_text([  # traditional Chinese, from a Big5 system
        ["編號", "當事人名稱", "統一社會信用代碼", "處罰機關"],
        ["11", "洛陽市測試商貿有限公司", PENALTY["uscc"], "洛陽市市場監督管理局"],
        ["12", "洛陽市示範貿易有限公司", PENALTY["uscc"], "洛陽市市場監督管理局"]]).encode("big5"))
    (drop / "处罚-gbk.csv").write_bytes(csv_text([CSV_HEADER, *(csv_row(i) for i in range(21, 24))]).encode("gbk"))

    check = node.cx("check")
    assert check.returncode == 1
    assert "处罚-utf8损坏.csv" in check.stdout and "line 2" in check.stdout and "第 2 行" in check.stdout
    assert "处罚-big5.csv" in check.stdout and "Big5" in check.stdout
    assert "unreadable files 无法读取的文件 2" in check.stdout
    done = node.once()
    assert done.returncode == REJECTED_HERE
    assert set(hub_records(hub, "amr")) == {"amr-cf-21", "amr-cf-22", "amr-cf-23"}  # the GBK file went through
    failed = drop / "failed"
    report = (failed / "处罚-utf8损坏.csv.report.txt").read_text("utf-8")
    errors = [line for line in report.splitlines() if line.startswith("错误 error:")]
    assert len(errors) == 1 and "line 2" in errors[0] and "UTF-8" in errors[0]  # once, and where it is
    assert "Big5" in (failed / "处罚-big5.csv.report.txt").read_text("utf-8")
    stamp = re.search(r"processed at: (\S+ \S+) \(北京时间 Asia/Shanghai\)", report).group(1)
    shanghai = datetime.now(timezone(timedelta(hours=8))).replace(tzinfo=None)
    assert abs((datetime.fromisoformat(stamp) - shanghai).total_seconds()) < 600

    # the corrected file put back is read; what was said about the broken one is resolved
    (failed / "处罚-utf8损坏.csv").unlink()
    (drop / "处罚-utf8损坏.csv").write_text(text, "utf-8")
    done = node.once()
    assert done.returncode == REJECTED_HERE and "1 row(s) were rejected here" in done.stderr  # the Big5 file
    assert {f"amr-cf-{i}" for i in (1, 2, 3, 4, 5)} <= set(hub_records(hub, "amr"))
    [still] = json.loads(node.cx("rejections", "--format", "json").stdout)
    assert still["locator"].startswith("处罚-big5.csv") and still["errors"][0]["rule"] == "unreadable"


# -- 2. two nodes of one department -------------------------------------------------------------------------

def test_two_nodes_of_one_department_sending_at_once_each_settle_their_own(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    hub.add_node("amr", "amr-2")  # cx hub add-node amr amr-2 && cx hub provision
    nodes = []
    for n, first in ((1, 1), (2, 1001)):
        url = f"sqlite:///{tmp_path / f'source{n}.db'}"
        fill(url, [penalty_row(i) for i in range(first, first + 300)]).dispose()
        nodes.append(make_node(hub, "amr", tmp_path / f"node{n}", sources(url) + cursor_stream(),
                               node_id=f"amr-{n}", delivery="batch_max_records = 20\nmax_in_flight = 2"))
    results: dict[int, subprocess.CompletedProcess] = {}
    threads = [threading.Thread(target=lambda i=i, node=node: results.__setitem__(i, node.once(timeout=120)))
               for i, node in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, node in enumerate(nodes):
        assert results[i].returncode == 0, results[i].stderr[-3000:]
        assert "does not hold" not in results[i].stderr  # every receipt reached the node that sent its batch
        status = node.status()
        assert status["outbox"]["delivered"] == 300 and status["outbox"]["alerts"] == 0
        assert status["checkpoints_unverified"] == [] and status["hub_error"] is None
    held = hub_records(hub, "amr")
    assert len(held) == 600 and all(r["versions"] == 1 for r in held.values())


def test_a_node_that_cannot_get_a_proof_says_not_yet_verified_not_tampered(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    hub.add_node("amr", "amr-2")
    urls = [f"sqlite:///{tmp_path / f'source{n}.db'}" for n in (1, 2)]
    engines = [fill(urls[0], [penalty_row(i) for i in range(1, 11)]), fill(urls[1], [penalty_row(i) for i in range(101, 111)])]
    one = make_node(hub, "amr", tmp_path / "one", sources(urls[0]) + cursor_stream(), node_id="amr-1")
    two = make_node(hub, "amr", tmp_path / "two", sources(urls[1]) + cursor_stream(), node_id="amr-2")
    delivered(one.once())
    delivered(two.once())  # the ledger grew behind node one's back: it missed those receipts
    with engines[0].begin() as conn:
        conn.execute(xzcf.insert(), [penalty_row(i, stamp="2026-03-02 10:00:00") for i in range(11, 21)])
    for engine in engines:
        engine.dispose()
    away = {**os.environ, "CX_DELIVERY_HUB_API": f"http://127.0.0.1:{free_port()}"}  # the hub API unreachable
    done = subprocess.run([sys.executable, "-m", "cx.cli", "node", "run", "--once", "--timeout", "60", "--config",
                           str(one.config)], capture_output=True, text=True, timeout=120, env=away)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not yet verified" in done.stderr and "尚未核验" in done.stderr
    status = one.status()
    assert status["outbox"]["delivered"] == 20 and status["alerts"] == []  # no tamper alarm
    assert len(status["checkpoints_unverified"]) == 1 and status["hub_error"]["kind"] == "hub_api_unreachable"
    assert "NOT YET VERIFIED" in one.cx("status").stdout
    delivered(one.once())  # the API answers again: the kept checkpoint is verified
    status = one.status()
    assert status["checkpoints_unverified"] == [] and status["hub_error"] is None and status["alerts"] == []
    assert status["last_checkpoint"]["size"] == 30


# -- 3. the handover is the configuration -------------------------------------------------------------------

def test_a_hub_with_its_own_user_prefix_needs_nothing_but_the_handover(tmp_path):
    from support import delete_broker_state

    topology = Topology(vhost=unique("cxtest-"), user_prefix=unique("ncx") + "-")
    hub = make_hub(tmp_path / "hub", ["stats"], topology=topology)
    try:
        hub.start()
        url = f"sqlite:///{tmp_path / 'source.db'}"
        fill(url, [penalty_row(i) for i in range(1, 4)]).dispose()
        node = make_node(hub, "stats", tmp_path / "node", sources(url) + cursor_stream("stats"))
        text = node.config.read_text()
        assert "[broker]" not in text and "hub_api" not in text and "user_prefix" not in text
        assert not (node.dir / "keys" / "hub.pub").exists()  # the hub's key came in the handover file too
        delivered(node.once())
        assert set(hub_records(hub, "stats")) == {f"stats-penalty-{i}" for i in (1, 2, 3)}

        # a handover file of an earlier version (the broker URL alone) still works: the user comes from the URL
        hub.add_node("stats", "stats-2")
        old = make_node(hub, "stats", tmp_path / "old", sources(url) + cursor_stream("stats"), node_id="stats-2")
        (old.dir / "secrets" / "handover.toml").unlink()
        (old.dir / "secrets" / "broker.amqp").write_text(hub.depts["stats"].amqp_url + "\n")
        (old.dir / "keys" / "hub.pub").write_text(hub.key.public.pem())
        old.config.write_text(old.config.read_text() + '\n[broker]\nurl_file = "secrets/broker.amqp"\n')
        old.config.write_text(old.config.read_text().replace("[delivery]\n", f'[delivery]\nhub_api = "{hub.api}"\n', 1))
        delivered(old.once())  # its records were at the hub already: receipted as duplicates
        assert old.status()["outbox"]["duplicate"] == 3
    finally:
        hub.kill()
        run_sync(delete_broker_state(topology))


# -- 5. honest health ---------------------------------------------------------------------------------------

def test_a_wrong_password_is_named_in_once_status_and_healthz(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url, [penalty_row(i) for i in range(1, 6)]).dispose()
    node = make_node(hub, "amr", tmp_path / "node", sources(url) + cursor_stream())
    handover = node.dir / "secrets" / "handover.toml"
    good = handover.read_text()
    password = Handover.parse(good).broker_url.split("://", 1)[1].split("@")[0].split(":", 1)[1]
    handover.write_text(good.replace(password, "wrong-password"))

    started = time.time()
    done = node.cx("run", "--once", timeout=60)  # no --timeout: a refused login is not waited out
    assert done.returncode == UNDELIVERED and time.time() - started < 45
    assert "login_refused" in done.stderr and "用户名或密码错误" in done.stderr and "wrong user name or password" in done.stderr
    assert "wrong-password" not in done.stderr
    status = node.status()
    assert status["broker_error"]["kind"] == "login_refused"
    text = node.cx("status").stdout
    assert "login_refused" in text and "用户名或密码错误" in text

    node.start()
    try:
        wait_until(lambda: healthz(node)[0] == 503, 20, "a degraded /healthz")
        code, health = healthz(node)
        assert health["status"] == "degraded" and health["broker"] == "login_refused"
        assert [p["kind"] for p in health["problems"]] == ["login_refused"]
        handover.write_text(good)  # the operator's correct file: taken at the next attempt, no restart
        wait_settled(node, 5, timeout=90)
        wait_until(lambda: healthz(node)[0] == 200, 20, "a healthy /healthz")
        assert node.status()["broker_error"] is None
    finally:
        node.kill(signal.SIGTERM)

    # a node the hub does not know: its receipts queue does not exist
    stranger = make_node(hub, "amr", tmp_path / "stranger", sources(url) + cursor_stream())
    stranger.config.write_text(stranger.config.read_text().replace('node_id = "amr-1"', 'node_id = "amr-9"'))
    text = (stranger.dir / "secrets" / "handover.toml").read_text()
    (stranger.dir / "secrets" / "handover.toml").write_text(
        text.replace('node_id = "amr-1"', 'node_id = "amr-9"').replace("cx.receipts.amr.amr-1", "cx.receipts.amr.amr-9"))
    done = stranger.cx("run", "--once", timeout=60)
    assert done.returncode == UNDELIVERED and "not_enrolled" in done.stderr and "cx hub add-node" in done.stderr


def test_open_alerts_make_healthz_degraded_until_resolved(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])  # not running: the test publishes the only receipts the node sees
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url, [penalty_row(i) for i in range(1, 4)]).dispose()
    node = make_node(hub, "amr", tmp_path / "node", sources(url) + cursor_stream())
    node.start()
    try:
        wait_until(lambda: sent_batches(node) == 1, 30, "a batch to be sent")
        [(batch_id, header_hash)] = outbox_rows(node, "SELECT batch_id, header_hash FROM batches")
        forged = Receipt.issue(SigningKey.generate(), batch_id=batch_id, dept="amr", header_hash=header_hash,
                               accepted=[], rejected=[], duplicates=0,
                               checkpoint=Checkpoint.sign(SigningKey.generate(), "amr", 1, merkle_root([b"x"])))
        run_sync(publish_receipts(hub, "amr", [forged.to_bytes()]))
        wait_until(lambda: healthz(node)[0] == 503, 20, "an alert")
        _, health = healthz(node)
        [alert] = [p for p in health["problems"] if p["kind"] == "receipt_invalid"]
        assert "bad_signature" in alert["en"] and "回执未通过核验" in alert["zh"] and "签名无效" in alert["zh"]
        listed = node.cx("alerts")
        assert "receipt_invalid" in listed.stdout and "回执未通过核验" in listed.stdout
        hub.start()  # receipts come; the alert about the forged one stays until a person looks at it
        wait_settled(node, 3, timeout=40)
        assert healthz(node)[0] == 503
        assert node.cx("alerts", "--resolve", "all").returncode == 0
        wait_until(lambda: healthz(node)[0] == 200, 10, "a healthy /healthz")
        assert node.cx("alerts").stdout.startswith("no open alerts")
    finally:
        node.kill(signal.SIGTERM)


# -- 6. what the node knows reaches the hub's dashboard --------------------------------------------------------

def test_rows_rejected_at_the_department_show_on_the_hubs_dashboard(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url, [penalty_row(i, invalid=i <= 7) for i in range(1, 21)]).dispose()
    node = make_node(hub, "amr", tmp_path / "node", sources(url) + cursor_stream())

    def dashboard() -> dict:
        request = urllib.request.Request(f"{hub.api}/api/v1/dashboard",
                                         headers={"Authorization": f"Bearer {hub.token}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return next(d for d in json.loads(resp.read())["departments"] if d["dept"] == "amr")

    node.start()
    try:
        wait_until(lambda: (d := dashboard())["dept_rejected"] == 7 and d["accepted"] == 13, 40,
                   "the delivery, and the heartbeat's rejections, on the dashboard")
    finally:
        node.kill(signal.SIGTERM)
    amr = dashboard()
    assert amr["dept_rejections"] == {"administrative_penalty": {"code_table": 7}}
    assert amr["rejected"] == 0 and amr["accepted"] == 13  # the hub itself refused nothing
    assert amr["rejection_rate"] == 7 / 20
    assert amr["alerts"] == {}  # open alerts only: none


# -- hub side: a node that is not enrolled ---------------------------------------------------------------------

def test_a_receipt_for_a_node_not_enrolled_waits_for_its_enrolment(hub_factory, tmp_path):
    from cx.protocol.envelope import build_batch
    from test_hub import TODAY_TYPE, Sender, line

    hub: Hub = hub_factory(["amr"])
    hub.start()
    stray = build_batch(hub.depts["amr"].key, dept="amr", node="ghost", seq=1, prev=None, lines=[line("ghost-1")],
                        schemas={TODAY_TYPE: 1})

    async def publish() -> None:
        async with Sender(hub, "amr") as amr:
            await amr.publish(stray.to_bytes(), routing_key=f"amr.{TODAY_TYPE}")

    async def receipt() -> Receipt:
        async with Sender(hub, "amr") as amr:
            queue = await amr.channel.get_queue(hub.topology.receipts_queue("amr", "ghost"), ensure=False)
            for _ in range(150):
                message = await queue.get(fail=False)
                if message is not None:
                    await message.ack()
                    return Receipt.parse(message.body, hub.key.public)
                await asyncio.sleep(0.1)
        raise AssertionError("no receipt after enrolment")

    run_sync(publish())
    # stored; its receipt had no queue to go to, and the hub did not retry it for ever
    wait_until(lambda: "ghost-1" in hub_records(hub, "amr"), 20, "the batch to be stored")

    def unroutable() -> str:
        with urllib.request.urlopen(f"{hub.api}/metrics", timeout=10) as resp:
            return resp.read().decode()
    wait_until(lambda: 'cx_receipts_unroutable_total{dept="amr"} 1.0' in unroutable(), 10, "the metric")
    hub.add_node("amr", "ghost")  # cx hub add-node amr ghost && cx hub provision
    run_sync(publish())  # the node's resend
    assert run_sync(receipt()).batch_id == stray.header.batch_id
    assert len(hub_records(hub, "amr")) == 1 and hub_records(hub, "amr")["ghost-1"]["versions"] == 1


# -- 7. a bounded outbox ------------------------------------------------------------------------------------

def test_the_running_node_prunes_what_is_settled_and_never_what_waits(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = fill(url, [penalty_row(i) for i in range(1, 201)])
    node = make_node(hub, "amr", tmp_path / "node", sources(url) + PENALTY_STREAM.format(mode="", dept="amr"),
                     node="keep_settled_days = 0\nprune_seconds = 0.2", delivery="batch_max_records = 50")

    def rows(query: str) -> int:
        return outbox_rows(node, query)[0][0]

    node.start()
    try:
        wait_settled(node, 200, timeout=60)
        wait_until(lambda: rows("SELECT COUNT(*) FROM records") == 0 and rows("SELECT COUNT(*) FROM batches") == 0,
                   30, "settled records and batches to be pruned")
        assert node.status()["outbox"]["delivered"] == 200  # still counted
        assert rows("SELECT COUNT(*) FROM latest") == 200  # what deduplication needs stays
        # snapshot passes keep running over the unchanged table: nothing is sent twice; a change is sent once
        time.sleep(2)
        with engine.begin() as conn:
            conn.execute(xzcf.update().where(xzcf.c.id <= 10).values(wfss="经复核，发布虚假广告"))
        wait_settled(node, 210, timeout=60)
        time.sleep(2)
        assert node.status()["outbox"]["delivered"] == 210
        held = hub_records(hub, "amr")
        assert len(held) == 200 and sum(r["versions"] for r in held.values()) == 210

        hub.stop()  # what waits for the hub is never pruned, however old the settled rows around it
        with engine.begin() as conn:
            conn.execute(xzcf.insert(), [penalty_row(i) for i in range(201, 231)])
        wait_until(lambda: rows("SELECT COUNT(*) FROM records WHERE state IN ('pending', 'batched')") == 30, 30,
                   "the new rows in the outbox")
        time.sleep(3)  # fifteen pruning rounds
        assert rows("SELECT COUNT(*) FROM records WHERE state IN ('pending', 'batched')") == 30
        hub.start("hub-2.log")
        wait_settled(node, 240, timeout=90)
    finally:
        node.kill(signal.SIGTERM)
        engine.dispose()
    assert len(hub_records(hub, "amr")) == 230
