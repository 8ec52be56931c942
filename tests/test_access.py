"""Who may see what: every route declares a permission, departments see only themselves, personal data is
masked for those not entitled, sessions, CSRF, lock-out, tokens — on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from sqlalchemy import select

from cx.hub import accounts
from cx.hub.access import GRANTS, RULES, Permission
from cx.hub.store import access_trail
from console_support import PASSWORD, ROLES, Client, make_console_hub
from examples import ID_NO


@pytest.fixture
async def hub(store_url, tmp_path):
    made = make_console_hub(tmp_path / "hub", store_url, console="idle_timeout_minutes = 0.05\nlockout_attempts = 3")
    await made.start()
    yield made
    await made.stop()


def trail_rows(hub, **where) -> list[dict]:
    store = hub.store()
    with store.reader.connect() as conn:
        query = select(access_trail).order_by(access_trail.c.idx)
        for k, v in where.items():
            query = query.where(access_trail.c[k] == v)
        found = [dict(r._mapping) for r in conn.execute(query)]
    store.dispose()
    return found


async def test_every_route_declares_a_permission_and_an_undeclared_one_is_refused(tmp_path):
    from aiohttp import web

    from console_support import make_console_hub as make

    hub = make(tmp_path / "hub", f"sqlite:///{tmp_path / 'store.db'}")
    from cx.hub.service import build_app

    app = build_app(hub.cfg)
    rules = app[RULES]
    routes = list(app.router.routes())
    assert len(routes) > 25
    undeclared = [f"{r.method} {r.resource.canonical}" for r in routes if r not in rules]
    assert undeclared == []
    public = sorted(f"{r.method} {r.resource.canonical}" for r in routes if rules[r].permission is Permission.PUBLIC)
    # what anyone may reach without an account: no record data but what the public portal publishes
    portal = [r for r in public if r.split(" ")[1].startswith("/portal")]
    assert [r for r in public if r not in portal] == sorted([
        "GET /api/v1/departments/{dept}/checkpoint", "GET /api/v1/departments/{dept}/consistency",
        "GET /api/v1/openapi.json", "GET /healthz", "GET /lang/{lang}", "GET /login", "GET /metrics",
        "GET /readyz", "GET /static/{version}/{name}", "POST /login"])
    assert "GET /portal/enterprises/{code}" in portal

    # a route added behind the access layer's back answers 403 to everyone, operator included
    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="secret records")

    app.router.add_get("/sneaky", sneaky)
    runner = web.AppRunner(app)
    await runner.setup()
    host, port = hub.cfg.listen()
    await web.TCPSite(runner, host, port).start()
    hub.url = f"http://{host}:{port}"
    try:
        async with Client(hub) as c:
            await c.login("op")
            status, body, _ = await c.get("/sneaky")
            assert status == 403 and "secret" not in body
            async with c.session.get(hub.url + "/sneaky", headers={"Authorization": f"Bearer {hub.tokens['op']}"}) as r:
                assert r.status == 403
    finally:
        await runner.cleanup()
    with pytest.raises(TypeError):
        from cx.hub.access import route
        route(app, "GET", "/x", sneaky, "operator")  # a permission must be a Permission


async def test_each_role_sees_what_it_may(hub):
    expected = {  # path -> roles that get 200
        "/": {"op", "office1"},
        "/departments/amr": {"op", "office1", "amr1"},
        "/departments/court": {"op", "office1", "court1"},
        "/departments/amr/records/amr-pen-1": {"op", "amr1", "aud"},
        "/quarantine": {"op", "amr1", "court1"},
        "/keys": {"op", "office1", "amr1", "court1", "aud"},
        "/trail": {"op", "aud"},
        "/trail.csv": {"op", "aud"},
    }
    for name in ROLES:
        async with Client(hub) as c:
            status, _, landed = await c.login(name)
            assert status == 200, name
            home = {"op": "/", "office1": "/", "amr1": "/departments/amr", "court1": "/departments/court",
                    "aud": "/trail"}[name]
            assert landed.endswith(home), (name, landed)
            for path, allowed in expected.items():
                status, body, url = await c.get(path, allow_redirects=False)
                if path == "/" and name not in allowed:
                    assert status == 303, (name, path)  # to the role's own start page
                    continue
                assert (status == 200) == (name in allowed), (name, path, status)
                if status == 403:
                    assert "access trail" in body  # the refusal says it was recorded


async def test_a_department_gets_403_on_another_departments_page_api_proof_and_export(hub):
    court_batch = hub.batches["court"]
    async with Client(hub) as c:
        await c.login("amr1")
        assert (await c.get("/departments/court"))[0] == 403
        assert (await c.get("/departments/court/records/court-pen-1"))[0] == 403
        assert (await c.json("/api/v1/departments/court/records/court-pen-1"))[0] == 403
        assert (await c.json("/api/v1/departments/court/records/court-pen-1/proof"))[0] == 403
        assert (await c.json(f"/api/v1/batches/{court_batch}"))[0] == 403  # the department known only after lookup
        assert (await c.json("/api/v1/quarantine?dept=court"))[0] == 403
        assert (await c.get("/trail.csv"))[0] == 403
        assert (await c.json("/api/v1/trail/segment"))[0] == 403
        # its own, all of it
        assert (await c.get("/departments/amr"))[0] == 200
        assert (await c.json("/api/v1/departments/amr/records/amr-pen-1/proof"))[0] == 200
        assert (await c.json(f"/api/v1/batches/{hub.batches['amr']}"))[0] == 200
        status, listing = await c.json("/api/v1/departments")
        assert status == 200 and [d["dept"] for d in listing] == ["amr"]
    # the same with the department's API token
    token = hub.tokens["amr1"]
    async with Client(hub) as c:
        assert (await c.json("/api/v1/departments/court/records/court-pen-1/proof", token=token))[0] == 403
        assert (await c.json("/api/v1/departments/amr/records/amr-pen-1/proof", token=token))[0] == 200
    await hub.flush_trail()
    denied = trail_rows(hub, actor="amr1", outcome="denied")
    assert {r["dept"] for r in denied} == {"court", None} and len(denied) >= 6
    token_uses = trail_rows(hub, actor=f"token:{token.split('_')[1]}")
    assert [r["outcome"] for r in token_uses] == ["denied", "ok"]


async def test_personal_data_is_masked_unless_entitled_and_proofs_follow_the_rule(hub):
    path = "/api/v1/departments/amr/records/amr-reg-1"
    for name, sees in (("op", True), ("amr1", True), ("aud", False)):
        async with Client(hub) as c:
            status, record = await c.json(path, token=hub.tokens[name])
            assert status == 200
            value = record["versions"][0]["data"]["legal_rep_id_no"]
            assert (value == ID_NO) == sees, (name, value)
            if not sees:
                assert value.startswith("41") and "*" in value
            status, bundle = await c.json(path + "/proof", token=hub.tokens[name])
            if sees:
                assert status == 200 and ID_NO in bundle["record_line"]
            else:
                assert status == 403 and bundle["error"] == "personal_data" and ID_NO not in json.dumps(bundle)
            # a record without personal data: its proof is the auditor's too
            status, _ = await c.json("/api/v1/departments/amr/records/amr-pen-1/proof", token=hub.tokens[name])
            assert status == 200
            # the record page: masked for the auditor, and the server's proof check needs no personal data
            await c.login(name)
            status, body, _ = await c.get("/departments/amr/records/amr-reg-1?check=")
            assert status == 200 and (ID_NO in body) == sees
            assert "Proof checked by the hub" in body and body.count("✔") == 4
    # nothing personal in the trail either
    await hub.flush_trail()
    assert all(ID_NO not in bytes(r["line"]).decode() for r in trail_rows(hub))


async def test_csrf_is_required_for_every_state_change(hub):
    async with Client(hub) as c:
        await c.get("/login")
        status, _, _ = await c.post("/login", {"name": "op", "password": PASSWORD}, csrf=False)
        assert status == 403  # even logging in needs the form's token
        await c.login("op")
        status, body, _ = await c.post("/quarantine/1/discard", {"comment": "x"}, csrf=False)
        assert status == 403 and "expired" in body
        status, _, _ = await c.post("/keys/revoke", {"key_id": hub.dept_keys["amr"].key_id, "confirm": "1"},
                                    csrf=False)
        assert status == 403
        status, _, _ = await c.post("/logout", {}, csrf=False)
        assert status == 403
        assert (await c.get("/trail"))[0] == 200  # still logged in: the forged log-out did nothing
    await hub.flush_trail()
    assert len([r for r in trail_rows(hub, outcome="denied") if "csrf" in bytes(r["line"]).decode()]) == 4


async def test_lockout_after_failures_is_recorded_and_lifted_by_a_new_password(hub):
    async with Client(hub) as c:
        for _ in range(2):
            status, body, _ = await c.login("office1", "wrong password")
            assert status == 401 and "Wrong account name or password" in body
        status, body, _ = await c.login("office1", "wrong password")
        assert status == 403 and "locked" in body
        status, body, _ = await c.login("office1")  # the right password no longer helps
        assert status == 403 and "locked" in body
        status, _, _ = await c.login("nobody-here")
        assert status == 401
    await hub.flush_trail()
    outcomes = [r["outcome"] for r in trail_rows(hub, action="login", actor="office1")]
    assert outcomes == ["failed", "failed", "locked", "locked"]
    store = hub.store()
    password = accounts.set_password(store, "office1", "a brand new password")
    accounts.disable_user(store, "amr1")
    store.dispose()
    async with Client(hub) as c:
        status, _, landed = await c.login("office1", password)
        assert status == 200 and landed.endswith("/")
        status, body, _ = await c.login("amr1")
        assert status == 403 and "disabled" in body


async def test_one_time_password_must_be_changed_and_sessions_end_on_change_and_idle(hub):
    store = hub.store()
    one_time = accounts.add_user(store, "newop", accounts.Role("operator"))
    store.dispose()
    async with Client(hub) as c:
        status, _, landed = await c.login("newop", one_time)
        assert landed.endswith("/account/password")
        assert (await c.get("/trail"))[2].endswith("/account/password")  # nothing else until changed
        status, body, _ = await c.post("/account/password", {"current": one_time, "new": "short", "again": "short"})
        assert status == 400
        status, _, landed = await c.post("/account/password", {"current": one_time, "new": "my own password",
                                                               "again": "my own password"})
        assert status == 200 and landed.endswith("/")
        assert (await c.get("/trail"))[0] == 200
        # another browser of the same account ends when the password changes elsewhere
        async with Client(hub) as other:
            await other.login("newop", "my own password")
            store = hub.store()
            accounts.set_password(store, "newop", "changed by the cli")
            store.dispose()
            assert (await other.get("/trail"))[2].endswith("/login?next=/trail")
    # idle timeout (3 s in this hub): the session ends, the page says why
    async with Client(hub) as c:
        await c.login("aud")
        assert (await c.get("/trail"))[0] == 200
        await asyncio.sleep(3.5)
        status, body, landed = await c.get("/trail")
        assert "/login?expired=1" in landed and "without activity" in body
    # the pages' own refresh does not keep a session alive
    async with Client(hub) as c:
        await c.login("op")
        for _ in range(4):
            await asyncio.sleep(1)
            await c.get("/?partial=1", headers={"X-CX-Refresh": "1"})
        assert "/login" in (await c.get("/"))[2]


async def test_tokens_are_hashed_revocable_and_the_openapi_document_says_who_may_call(hub):
    token = hub.tokens["aud"]
    store = hub.store()
    with store.reader.connect() as conn:
        from cx.hub.store import api_tokens

        stored = [r.secret_hash for r in conn.execute(select(api_tokens.c.secret_hash))]
    assert token.split("_", 2)[2] not in " ".join(stored)  # only hashes are kept
    async with Client(hub) as c:
        assert (await c.json("/api/v1/trail", token=token))[0] == 200
        assert (await c.json("/api/v1/trail", token=token[:-1] + ("A" if token[-1] != "A" else "B")))[0] == 401
        accounts.revoke_token(store, token.split("_")[1])
        status, body = await c.json("/api/v1/trail", token=token)
        assert status == 401 and body["error"] == "invalid_token"
        assert (await c.json("/api/v1/trail"))[0] == 401  # no credentials at all
        status, doc = await c.json("/api/v1/openapi.json")
    store.dispose()
    assert set(doc["components"]["securitySchemes"]) == {"bearerToken", "sessionCookie"}
    api_routes = {(r.resource.canonical, r.method.lower()) for r in hub.app[RULES]
                  if r.resource.canonical.startswith("/api/")}
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops if p.startswith("/api/")}
    assert api_routes == documented
    for path, method in api_routes:
        roles = doc["paths"][path][method]["x-roles"]
        assert roles, path
    assert doc["paths"]["/api/v1/trail"]["get"]["x-roles"] == ["operator", "auditor"]
    assert doc["paths"]["/api/v1/departments/{dept}/checkpoint"]["get"]["x-roles"] == ["public"]
    assert "department:<own>" in doc["paths"]["/api/v1/departments/{dept}/records/{record_id}/proof"]["get"]["x-roles"]


def test_role_grants_are_as_documented():
    assert GRANTS["operator"] == frozenset(Permission)
    assert Permission.TRAIL not in GRANTS["department"] and Permission.RECORDS not in GRANTS["office"]
    assert Permission.QUARANTINE_ACT not in GRANTS["auditor"] | GRANTS["office"] | GRANTS["department"]
    assert Permission.KEYS_MANAGE not in GRANTS["auditor"] | GRANTS["office"] | GRANTS["department"]


def test_cli_accounts_and_tokens(tmp_path):
    def cx(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cx.cli", *args], capture_output=True, text=True)

    hubdir = tmp_path / "hub"
    done = cx("hub", "init", "--dir", str(hubdir))
    assert done.returncode == 0 and "first operator" in done.stdout and "admin / " in done.stdout
    assert (hubdir / "secrets" / "console" / "session.key").stat().st_mode & 0o777 == 0o600
    cfg = str(hubdir / "hub.toml")
    done = cx("hub", "user", "add", "wang", "--role", "department:amr", "--config", cfg)
    assert done.returncode == 2 and "unknown department" in done.stderr
    done = cx("hub", "user", "add", "li", "--role", "office", "--config", cfg)
    assert done.returncode == 0 and "one-time password" in done.stdout
    assert cx("hub", "user", "add", "li", "--role", "office", "--config", cfg).returncode == 2
    assert cx("hub", "user", "add", "x", "--role", "boss", "--config", cfg).returncode == 2
    assert cx("hub", "user", "disable", "li", "--config", cfg).returncode == 0
    listing = json.loads(cx("hub", "user", "list", "--format", "json", "--config", cfg).stdout)
    assert {(a["name"], a["role"], bool(a["disabled_at"])) for a in listing} == {("admin", "operator", False),
                                                                               ("li", "office", True)}
    done = cx("hub", "token", "add", "--role", "auditor", "--name", "审计脚本", "--config", cfg)
    assert done.returncode == 0 and done.stdout.startswith("cx_")
    token_id = done.stdout.split("_")[1]
    assert cx("hub", "token", "revoke", token_id, "--config", cfg).returncode == 0
    assert cx("hub", "token", "revoke", token_id, "--config", cfg).returncode == 2
    tokens = json.loads(cx("hub", "token", "list", "--format", "json", "--config", cfg).stdout)
    assert tokens[0]["revoked_at"] and tokens[0]["name"] == "审计脚本"


def test_a_password_hashed_with_the_old_argon2_parameters_logs_in_and_is_rehashed(store):
    from datetime import timedelta

    from argon2 import PasswordHasher, extract_parameters

    accounts.add_user(store, "old1", accounts.Role("auditor"), "an old long password")
    old = PasswordHasher().hash("an old long password")  # the library's default: what earlier hubs stored
    with store.writer.begin() as conn:
        conn.execute(accounts.accounts.update().where(accounts.accounts.c.name == "old1").values(password_hash=old))
    with pytest.raises(accounts.LoginRefused):
        accounts.login(store, "old1", "not the password", attempts=5, lockout=timedelta(minutes=1))
    accounts.login(store, "old1", "an old long password", attempts=5, lockout=timedelta(minutes=1))
    with store.reader.connect() as conn:
        stored = conn.execute(select(accounts.accounts.c.password_hash)
                              .where(accounts.accounts.c.name == "old1")).scalar_one()
    params = extract_parameters(stored)
    assert (params.memory_cost, params.time_cost, params.parallelism) == (
        accounts.PASSWORD_HASH["memory_cost"], accounts.PASSWORD_HASH["time_cost"],
        accounts.PASSWORD_HASH["parallelism"])
    accounts.login(store, "old1", "an old long password", attempts=5, lockout=timedelta(minutes=1))
