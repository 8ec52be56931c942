"""docs/protocol.md cannot drift from the code: its worked example is generated, and re-checked here
the way a third party would, with only hashlib and cryptography."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
SCRIPT = ROOT / "docs" / "examples" / "worked_example.py"
BEGIN = "<!-- BEGIN worked-example"
END = "<!-- END worked-example -->"

# RFC 8032 section 7.1: the published public keys of TEST 1 and TEST 2
RFC8032_TEST1_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
RFC8032_TEST2_PUBLIC = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"

# hex digests, key ids, base64url signatures: anything a reader might copy and compare
TOKEN = re.compile(r"(?<![A-Za-z0-9_-])(?:[0-9a-f]{32,}|[A-Za-z0-9_-]{43,})(?![A-Za-z0-9_-])")


def run_script(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          encoding="utf-8", check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def markdown() -> str:
    return run_script()


@pytest.fixture(scope="module")
def values() -> dict:
    return json.loads(run_script("--json"))


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text("utf-8")


def generated_section(doc: str) -> str:
    start = doc.index(BEGIN)
    return doc[doc.index("\n", start) + 1:doc.index(END)]


# -- the doc shows exactly what the code produces ---------------------------------------------------------


def test_every_printed_hex_and_base64_value_appears_in_the_doc(markdown, doc):
    tokens = set(TOKEN.findall(markdown))
    assert len(tokens) >= 20, tokens  # the pattern still finds the hashes, key ids and signatures
    missing = sorted(t for t in tokens if t not in doc)
    assert not missing, f"run: python {SCRIPT.relative_to(ROOT)} --write docs/protocol.md; missing {missing[:5]}"


def test_the_generated_section_is_current(markdown, doc):
    assert generated_section(doc).strip("\n") == markdown.strip("\n"), (
        f"docs/protocol.md is stale: run python {SCRIPT.relative_to(ROOT)} --write docs/protocol.md")
    done = subprocess.run([sys.executable, str(SCRIPT), "--check", str(DOC)], cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_every_json_value_appears_in_the_doc(values, doc):
    """The JSON form of the example (what the third-party checks below use) is what the doc shows."""
    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    for text in strings(values):
        for token in TOKEN.findall(text):
            assert token in doc, token
    for key in ("header_1", "header_2", "retraction_line", "checkpoint_2_json", "heartbeat", "rejection"):
        assert values[key].strip("\n") in doc, key
    for line in values["record_lines"]:
        assert line in doc
    assert values["batch_1"] in doc and values["batch_2"] in doc and values["receipt_1"] in doc
    assert values["checkpoint_1_text"] in doc and values["checkpoint_2_text"] in doc


# -- a third party recomputes everything without the cx library ---------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(line: bytes) -> bytes:
    return sha256(b"\x00" + line)


def node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 Merkle tree hash over leaf hashes."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def b64url(text: str) -> bytes:
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key(secret_hex: str) -> tuple[bytes, Ed25519PublicKey]:
    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret_hex)).public_key()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw), public


def root_from_inclusion(index: int, size: int, leaf_hash: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2."""
    assert 0 <= index < size
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        assert sn != 0
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def consistent(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2 (for 0 < old < new)."""
    if old & (old - 1) == 0:
        proof = [old_root, *proof]
    fn, sn = old - 1, new - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def split_batch(data: bytes) -> tuple[bytes, bytes, list[bytes]]:
    assert data.endswith(b"\n") and b"\r" not in data
    lines = data[:-1].split(b"\n")
    return lines[0], lines[1], lines[2:]


def signature_from_line(line: bytes) -> bytes:
    match = re.fullmatch(rb'\{"sig":"([A-Za-z0-9_-]{86})"\}', line)
    assert match, line
    sig = b64url(match.group(1).decode())
    assert len(sig) == 64
    return sig


def verified_body(text: str, secret_hex: str) -> bytes:
    """The body of a two-line signed statement (receipt, refusal, heartbeat), its signature checked."""
    _, key = public_key(secret_hex)
    body, sig_line, rest = split_batch(text.encode())
    assert rest == []
    key.verify(signature_from_line(sig_line), body)
    return body


def test_keys_and_key_ids_match_rfc_8032(values):
    for secret, published, prefix in ((values["node_secret"], RFC8032_TEST1_PUBLIC, "node"),
                                      (values["hub_secret"], RFC8032_TEST2_PUBLIC, "hub")):
        raw, public = public_key(secret)
        assert raw.hex() == published == values[f"{prefix}_public"]
        assert sha256(raw)[:16].hex() == values[f"{prefix}_key_id"]
        pem = serialization.load_pem_public_key(values[f"{prefix}_public_pem"].encode())
        assert pem.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw


def test_third_party_recomputes_batch_1(values):
    data = values["batch_1"].encode("utf-8")
    assert len(data) == values["batch_1_length"]
    assert hashlib.sha256(data).hexdigest() == values["batch_1_sha256"]
    header, sig_line, records = split_batch(data)
    assert header.decode() == values["header_1"] and len(header) == values["header_1_length"]
    assert [r.decode() for r in records] == values["record_lines"]

    leaves = [leaf(r) for r in records]
    assert [h.hex() for h in leaves] == values["leaf_hashes"]
    root = node(leaves[0], leaves[1])
    assert root == mth(leaves) and root.hex() == values["root_1"]
    fields = json.loads(header)
    assert fields["root"] == root.hex() and fields["count"] == len(records) == 2
    assert fields["seq"] == 1 and fields["prev"] is None and fields["v"] == 1
    assert fields["key_id"] == values["node_key_id"] and fields["batch_id"] == values["batch_id_1"]
    # the header is in the compact key-sorted form
    assert json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() == header

    assert hashlib.sha256(header).hexdigest() == values["header_hash_1"]
    signature = signature_from_line(sig_line)
    assert signature.hex() == values["signature_1_hex"]
    assert base64.urlsafe_b64encode(signature).rstrip(b"=").decode() == values["signature_1"]
    _, public = public_key(values["node_secret"])
    public.verify(signature, header)  # raises InvalidSignature if it does not verify
    # Ed25519 is deterministic: signing again gives the same bytes
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(values["node_secret"]))
    assert private.sign(header) == signature

    # the inclusion proof of record 2 (leaf index 1)
    path = [bytes.fromhex(h) for h in values["inclusion_path"]]
    assert path == [leaves[0]]
    assert root_from_inclusion(1, 2, leaves[1], path) == root

    # the batch id is a UUIDv7 whose time field is `created`
    batch_id = fields["batch_id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", batch_id)
    from datetime import datetime, timezone
    created = datetime.strptime(fields["created"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert int(batch_id.replace("-", "")[:12], 16) == int(created.timestamp() * 1000)


def test_third_party_recomputes_the_content_hash(values):
    record = json.loads(values["record_lines"][0])
    body = {"data": record.get("data"), "op": record["op"], "reason": record.get("reason"), "type": record["type"]}
    hashed = json.dumps(body, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode()
    assert hashed.decode() == values["content_hash_input"]
    assert hashlib.sha256(hashed).hexdigest() == values["content_hash_1"]


def test_third_party_checks_receipt_and_checkpoints(values):
    _, hub = public_key(values["hub_secret"])
    receipt = json.loads(verified_body(values["receipt_1"], values["hub_secret"]))
    assert receipt["format"] == "cx-receipt/1" and receipt["hub_key_id"] == values["hub_key_id"]
    assert receipt["header_hash"] == values["header_hash_1"]
    assert receipt["accepted"] == [json.loads(r)["record_id"] for r in values["record_lines"]]
    assert receipt["rejected"] == [] and receipt["duplicates"] == 0
    assert receipt["consistency"] == {"old_size": 0, "proof": []}

    cp = receipt["checkpoint"]
    text = f"cx-checkpoint/1\n{cp['dept']}\n{cp['size']}\n{cp['root']}\n{cp['time']}\n".encode()
    assert text.decode() == values["checkpoint_1_text"]
    assert cp["root"] == values["root_1"] and cp["size"] == 2 and cp["key_id"] == values["hub_key_id"]
    assert cp["sig"] == values["checkpoint_1_sig"]
    hub.verify(b64url(cp["sig"]), text)

    cp2 = json.loads(values["checkpoint_2_json"])
    text2 = f"cx-checkpoint/1\n{cp2['dept']}\n{cp2['size']}\n{cp2['root']}\n{cp2['time']}\n".encode()
    assert text2.decode() == values["checkpoint_2_text"]
    hub.verify(b64url(cp2["sig"]), text2)
    assert cp2["sig"] == values["checkpoint_2_sig"]


def test_third_party_follows_the_chain_and_the_ledger(values):
    _, public = public_key(values["node_secret"])
    header, sig_line, records = split_batch(values["batch_2"].encode())
    public.verify(signature_from_line(sig_line), header)
    fields = json.loads(header)
    assert fields["seq"] == 2 and fields["prev"] == values["header_hash_1"]
    assert hashlib.sha256(header).hexdigest() == values["header_hash_2"]
    assert [r.decode() for r in records] == [values["retraction_line"]]
    retraction = leaf(records[0])
    assert retraction.hex() == values["leaf_hash_3"] == fields["root"] == values["root_2"]

    leaves = [bytes.fromhex(h) for h in values["leaf_hashes"]] + [retraction]
    old_root, new_root = mth(leaves[:2]), mth(leaves)
    assert new_root.hex() == values["ledger_root_3"] and new_root == node(old_root, retraction)
    proof = [bytes.fromhex(h) for h in values["consistency_2_3"]]
    assert consistent(2, 3, old_root, new_root, proof)
    assert not consistent(2, 3, old_root, new_root, [leaves[0]])

    bundle = values["bundle"]
    ledger = bundle["ledger"]
    assert ledger["checkpoint"]["root"] == new_root.hex()
    assert root_from_inclusion(ledger["leaf_index"], ledger["ledger_size"], leaves[1],
                               [bytes.fromhex(h) for h in ledger["path"]]) == new_root
    # the offline part of the bundle
    line = bundle["record_line"].encode()
    assert line.decode() == values["record_lines"][1]
    public.verify(b64url(bundle["signature"]), bundle["batch_header"].encode())
    batch_root = bytes.fromhex(json.loads(bundle["batch_header"])["root"])
    assert root_from_inclusion(bundle["inclusion"]["leaf_index"], 2, leaf(line),
                               [bytes.fromhex(h) for h in bundle["inclusion"]["path"]]) == batch_root


def test_third_party_checks_the_heartbeat(values):
    body = verified_body(values["heartbeat"], values["node_secret"])
    assert json.loads(body)["format"] == "cx-heartbeat/1"


def test_third_party_checks_the_refusal(values):
    """A node written from the document alone: verify the hub's signature, match the batch by id and bytes."""
    body = verified_body(values["refusal"], values["hub_secret"])
    refusal = json.loads(body)
    assert set(refusal) == {"format", "dept", "batch_id", "header_hash", "body_hash", "reason", "detail_zh",
                            "detail_en", "received", "hub_key_id"}
    assert refusal["format"] == "cx-refusal/1" and refusal["reason"] == "key_revoked"
    assert refusal["hub_key_id"] == values["hub_key_id"] and refusal["dept"] == "amr"
    # compact, key-sorted, like every statement of the hub
    assert json.dumps(refusal, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() == body
    batch = values["batch_3"].encode()
    header, _, _ = split_batch(batch)
    assert refusal["body_hash"] == hashlib.sha256(batch).hexdigest() == values["body_hash_3"]
    assert refusal["header_hash"] == hashlib.sha256(header).hexdigest() == values["header_hash_3"]
    assert refusal["batch_id"] == json.loads(header)["batch_id"]
    # the batch itself is a good one: chained to batch 2 and signed by the (since revoked) key
    _, node_key = public_key(values["node_secret"])
    node_key.verify(signature_from_line(split_batch(batch)[1]), header)
    assert json.loads(header)["prev"] == values["header_hash_2"]
    assert json.loads(header)["created"] > values["revoked"]
    assert values["node_key_id"] in refusal["detail_en"] and refusal["detail_zh"]


def test_cx_verify_accepts_the_bundle(values, tmp_path, capsys):
    from cx.cli import main

    (tmp_path / "bundle.json").write_text(json.dumps(values["bundle"], ensure_ascii=False), "utf-8")
    (tmp_path / "amr.pub").write_text(values["node_public_pem"])
    assert main(["verify", str(tmp_path / "bundle.json"), "--public-key", str(tmp_path / "amr.pub")]) == 0
    assert "VALID" in capsys.readouterr().out


def test_the_wire_schemas_accept_the_example(values):
    from jsonschema import Draft202012Validator

    def check(name: str, obj: object) -> None:
        schema = json.loads((ROOT / "schemas" / f"{name}.v1.json").read_text("utf-8"))
        errors = [e.message for e in Draft202012Validator(schema).iter_errors(obj)]
        assert not errors, (name, errors)

    check("batch-header", json.loads(values["header_1"]))
    check("batch-header", json.loads(values["header_2"]))
    for line in [*values["record_lines"], values["retraction_line"]]:
        check("record-line", json.loads(line))
    check("receipt", json.loads(values["receipt_1"].split("\n")[0]))
    check("refusal", json.loads(values["refusal"].split("\n")[0]))
    check("proof-bundle", values["bundle"])


# -- the standard-tools recipe in the doc works as printed ---------------------------------------------


def shell_steps(doc: str) -> list[tuple[str, list[str]]]:
    """($ command, expected output lines) from the ```sh blocks of the worked example."""
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```sh\n(.*?)```", generated_section(doc), re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
    return steps


@pytest.mark.skipif(not all(shutil.which(t) for t in ("bash", "openssl", "xxd", "sha256sum", "base64")),
                    reason="needs bash, openssl, xxd, sha256sum and base64")
def test_the_standard_tools_recipe_works(values, doc, tmp_path):
    (tmp_path / "batch-1.ndjson").write_bytes(values["batch_1"].encode())
    (tmp_path / "amr.pub").write_text(values["node_public_pem"])
    (tmp_path / "amr.key").write_text(values["node_private_pem"])
    (tmp_path / "hub.pub").write_text(values["hub_public_pem"])
    steps = shell_steps(doc)
    assert len(steps) >= 10
    for command, expected in steps:
        if command.startswith("python3 "):
            command = f"'{sys.executable}' {command[len('python3 '):]}"
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.splitlines() == expected, command


# -- every code and rule the implementation has is documented -----------------------------------------------


def test_every_reason_code_is_in_the_table(doc):
    from cx.protocol.errors import Reason

    table = doc[doc.index("## 16. Reason codes"):doc.index("## 17.")]
    for reason in Reason:
        assert f"| `{reason.value}` |" in table, reason
        assert f"`{reason.value}`" in doc


def test_every_rule_name_is_documented(doc):
    from cx.protocol.validation import FAST_FORMATS, FORMAT_CHECKER
    from cx.schemas.rules import RULES

    section = doc[doc.index("## 17. Record-level rule names"):doc.index("## 18.")]
    names = {
        # schema keywords as validation.py names them
        "required", "dependent_required", "additional_properties", "type", "decimal", "enum", "min_length",
        "max_length", "pattern", "min_items", "max_items", "unique_items", "minimum", "maximum",
        "max_properties", "unknown_schema",
        # what schemas/rules.py emits
        "uscc_required", "event_date_not_future", "valid_range", "fine_amount_when_fined",
        "report_year_for_annual_report",
        # the hub's own
        "schema_not_declared", "retract_unknown", "record_type_changed",
        # unreadable lines
        "not_utf8", "bad_json", "duplicate_key", "non_finite_number", "too_deep", "line_too_long", "bad_record",
        "bad_character",
    }
    names |= set(RULES)
    names |= {f"format:{name}" for name in set(FAST_FORMATS) | set(FORMAT_CHECKER.checkers)}
    for name in sorted(names):
        assert f"`{name}`" in section, name


def test_record_types_constants_and_limits_are_documented(doc):
    from cx import transport
    from cx.protocol import bundle, envelope, heartbeat, jsonutil, receipts
    from cx.protocol.validation import default_registry

    registry = default_registry()
    for record_type in registry.record_types():
        schema = registry.get(record_type)
        assert f"| `{record_type}` | {schema.title} | `{schema.event_date}` | {schema.limit_days} |" in doc
    t = transport.Topology()
    for name in (t.vhost, t.records_exchange, t.ingest_queue, t.dead_letter_exchange, t.quarantine_queue,
                 t.receipts_exchange, t.receipts_queue("<dept>", "<node>"), t.receipts_key("<dept>", "<node>"),
                 t.hub_user, t.dept_user("<dept>"),
                 t.routing_key("<dept>", "<record type>"), t.routing_key("<dept>", "heartbeat"),
                 transport.BATCH, transport.HEARTBEAT, transport.RECEIPT, transport.REFUSAL,
                 receipts.CHECKPOINT_FORMAT, receipts.RECEIPT_FORMAT, receipts.REFUSAL_FORMAT, bundle.BUNDLE_FORMAT,
                 heartbeat.HEARTBEAT_FORMAT):
        assert f"`{name}`" in doc or f'`"{name}"`' in doc, name
    limits = envelope.DEFAULT_LIMITS
    for number in (limits.max_batch_bytes, limits.max_records, limits.max_records + 2, limits.max_line_bytes,
                   heartbeat.MAX_HEARTBEAT_BYTES, receipts.MAX_RECEIPT_BYTES, receipts.MAX_REFUSAL_BYTES,
                   heartbeat.MAX_PENDING_SECONDS, 2**53 - 1):
        assert str(number) in doc, number
    # the bounds of what the hub keeps, as the record-line section states them
    section = doc[doc.index("## 5. Record lines"):doc.index("## 6.")]
    assert f"1–{envelope.RECORD_ID_MAX} characters" in section
    for name, longest in envelope.SOURCE_MAX.items():
        assert re.search(rf"`{name}`[^|]*at most {longest}", section), name
    assert f"at most {heartbeat.MAX_HEARTBEAT_VERSION} characters" in doc
    assert f"at most **{jsonutil.MAX_DEPTH}**" in doc
    assert envelope.FORMAT_VERSION == 1 and "`v` | integer | format version: `1`" in doc
    for pattern in (envelope.DEPT_ID, envelope.NODE_ID, envelope.TYPE_NAME):
        assert pattern.pattern.replace("\\Z", "$") in doc, pattern.pattern
