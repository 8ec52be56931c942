"""The hub's signed statements (checkpoints, receipts) and offline proof bundles."""

from __future__ import annotations

import base64
import json

import pytest

from cx.protocol import jsonutil
from cx.protocol.bundle import ProofBundle
from cx.protocol.envelope import b64encode, build_batch, parse_batch, signature_line
from cx.protocol.errors import ProtocolError, Reason
from cx.protocol.keys import SigningKey
from cx.protocol.merkle import MerkleTree, leaf_hash
from cx.protocol.receipts import Checkpoint, Receipt, Rejection
from examples import record_line, signed_batch

TIME = "2025-03-31T02:00:01.234Z"


@pytest.fixture(scope="module")
def hub() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def dept_key() -> SigningKey:
    return SigningKey.generate()


def raises(reason: Reason, fn, *args, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


def checkpoint(key: SigningKey, dept: str = "amr", size: int = 3) -> Checkpoint:
    tree = MerkleTree.from_lines([record_line("other", i) for i in range(size)])
    return Checkpoint.sign(key, dept, size, tree.root(), TIME)


def receipt(key: SigningKey, cp: Checkpoint | None = None, **overrides) -> Receipt:
    args = dict(
        batch_id="0195e9c4-7a00-7000-8000-000000000001", dept="amr", header_hash="ab" * 32,
        accepted=["other-1", "honor-2"],
        rejected=[Rejection(2, "penalty-3", [{"path": "fine_amount", "rule": "fine_amount_when_fined",
                                               "message_zh": "处罚类别含「罚款」时必须填写「罚款金额」",
                                               "message_en": "fine_amount is required", "value": None}])],
        duplicates=1, checkpoint=cp or checkpoint(key), received=TIME,
    )
    args.update(overrides)
    return Receipt.issue(key, **args)


def signed_body(key: SigningKey, body: dict) -> bytes:
    raw = jsonutil.dumps(body)
    return raw + b"\n" + signature_line(key.sign(raw)) + b"\n"


# -- checkpoints ---------------------------------------------------------------------------

def test_checkpoint_sign_verify_round_trip(hub):
    cp = checkpoint(hub)
    cp.verify(hub.public)
    again = Checkpoint.from_json(json.loads(json.dumps(cp.to_json())))
    assert again == cp
    again.verify(hub.public)
    assert cp.key_id == hub.key_id and len(cp.root_bytes) == 32
    assert Checkpoint.signed_text("amr", 3, cp.root, TIME) == f"cx-checkpoint/1\namr\n3\n{cp.root}\n{TIME}\n".encode()
    # anyone can re-check it from the fields alone
    hub.public.key.verify(base64.urlsafe_b64decode(cp.signature + "=="), Checkpoint.signed_text("amr", 3, cp.root, TIME))


@pytest.mark.parametrize("field", ["dept", "size", "root", "time"])
def test_checkpoint_tamper_detected(hub, field):
    cp = checkpoint(hub).to_json()
    cp[field] = {"dept": "tax", "size": 4, "root": "00" * 32, "time": "2025-03-31T02:00:01.235Z"}[field]
    raises(Reason.BAD_SIGNATURE, Checkpoint.from_json(cp).verify, hub.public)


def test_checkpoint_signed_by_another_key(hub, other):
    cp = checkpoint(other)
    raises(Reason.KEY_ID_MISMATCH, cp.verify, hub.public)
    forged = Checkpoint.from_json({**cp.to_json(), "key_id": hub.key_id})
    raises(Reason.BAD_SIGNATURE, forged.verify, hub.public)


@pytest.mark.parametrize("sig", ["not base64!", "A", "AAAA"])
def test_checkpoint_bad_signature_encoding(hub, sig):
    cp = Checkpoint.from_json({**checkpoint(hub).to_json(), "sig": sig})
    with pytest.raises(ProtocolError) as info:
        cp.verify(hub.public)
    assert info.value.reason in (Reason.BAD_CHECKPOINT, Reason.BAD_SIGNATURE)


@pytest.mark.parametrize("change", [
    {"size": -1}, {"size": True}, {"size": "3"}, {"root": "AB" * 32}, {"root": "ab" * 31},
    {"dept": "AMR"}, {"dept": "amr\n"}, {"time": "2025-03-31"}, {"key_id": "x"}, {"sig": 5}, {"extra": 1},
])
def test_checkpoint_bad_fields(hub, change):
    obj = {**checkpoint(hub).to_json(), **change}
    raises(Reason.BAD_CHECKPOINT, Checkpoint.from_json, obj)


def test_checkpoint_missing_field(hub):
    obj = checkpoint(hub).to_json()
    del obj["time"]
    raises(Reason.BAD_CHECKPOINT, Checkpoint.from_json, obj)
    raises(Reason.BAD_CHECKPOINT, Checkpoint.from_json, [obj])


# -- receipts ------------------------------------------------------------------------------

def test_receipt_round_trip(hub):
    issued = receipt(hub)
    data = issued.to_bytes()
    assert data.count(b"\n") == 2 and data.endswith(b"\n")
    parsed = Receipt.parse(data, hub.public)
    assert parsed == issued
    assert parsed.body == issued.body and parsed.signature == issued.signature
    assert list(parsed.accepted) == ["other-1", "honor-2"]
    assert parsed.rejected[0].line == 2 and parsed.rejected[0].record_id == "penalty-3"
    assert parsed.rejected[0].errors[0]["rule"] == "fine_amount_when_fined"
    assert parsed.checkpoint.size == 3 and parsed.duplicates == 1
    body = json.loads(data.split(b"\n")[0])
    assert body["format"] == "cx-receipt/1" and body["hub_key_id"] == hub.key_id


def test_receipt_signed_by_another_key_is_refused(hub, other):
    foreign = receipt(other)
    with pytest.raises(ProtocolError) as info:
        Receipt.parse(foreign.to_bytes(), hub.public)
    assert info.value.reason in (Reason.BAD_SIGNATURE, Reason.KEY_ID_MISMATCH)


def test_receipt_claiming_hub_key_but_signed_by_another(hub, other):
    body = receipt(hub).body_json()
    raises(Reason.BAD_SIGNATURE, Receipt.parse, signed_body(other, body), hub.public)


def test_receipt_naming_another_hub_key(hub, other):
    body = {**receipt(hub).body_json(), "hub_key_id": other.key_id}
    raises(Reason.KEY_ID_MISMATCH, Receipt.parse, signed_body(hub, body), hub.public)


def test_receipt_with_checkpoint_from_another_key(hub, other):
    body = receipt(hub, cp=checkpoint(other)).body_json()
    raises(Reason.KEY_ID_MISMATCH, Receipt.parse, signed_body(hub, body), hub.public)


def test_receipt_with_tampered_checkpoint(hub):
    body = receipt(hub).body_json()
    body["checkpoint"]["size"] = 2
    raises(Reason.BAD_SIGNATURE, Receipt.parse, signed_body(hub, body), hub.public)


def test_receipt_with_checkpoint_of_another_department(hub):
    body = receipt(hub, cp=checkpoint(hub, dept="tax")).body_json()
    raises(Reason.BAD_RECEIPT, Receipt.parse, signed_body(hub, body), hub.public)


def test_every_byte_of_a_receipt_body_is_covered(hub):
    data = receipt(hub).to_bytes()
    body_len = data.index(b"\n")
    for pos in range(body_len):
        changed = data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:]
        raises(Reason.BAD_SIGNATURE, Receipt.parse, changed, hub.public)


def test_receipt_signature_line_changes(hub):
    data = receipt(hub).to_bytes()
    body, sig, _ = data.split(b"\n")
    for pos in range(len(sig)):
        changed = body + b"\n" + sig[:pos] + bytes([sig[pos] ^ 0x01]) + sig[pos + 1:] + b"\n"
        with pytest.raises(ProtocolError) as info:
            Receipt.parse(changed, hub.public)
        assert info.value.reason in (Reason.BAD_SIGNATURE, Reason.BAD_FRAMING, Reason.BAD_JSON)


@pytest.mark.parametrize("data", [b"", b"x", b"a\nb", b"a\nb\nc\n", b"a\nb\n\n"])
def test_receipt_framing(hub, data):
    raises(Reason.BAD_FRAMING, Receipt.parse, data, hub.public)


def test_receipt_framing_around_a_good_receipt(hub):
    data = receipt(hub).to_bytes()
    raises(Reason.BAD_FRAMING, Receipt.parse, data[:-1], hub.public)
    raises(Reason.BAD_FRAMING, Receipt.parse, data + b"\n", hub.public)
    raises(Reason.TOO_LARGE, Receipt.parse, data, hub.public, max_bytes=len(data) - 1)


def test_receipt_wrong_format_and_missing_fields(hub):
    body = receipt(hub).body_json()
    raises(Reason.UNSUPPORTED_VERSION, Receipt.parse, signed_body(hub, {**body, "format": "cx-receipt/2"}), hub.public)
    for field in ("batch_id", "accepted", "rejected", "checkpoint", "hub_key_id"):
        partial = {k: v for k, v in body.items() if k != field}
        raises(Reason.BAD_RECEIPT, Receipt.parse, signed_body(hub, partial), hub.public)
    raises(Reason.BAD_RECEIPT, Receipt.parse, signed_body(hub, {**body, "rejected": [1]}), hub.public)


def test_receipt_body_that_is_not_an_object(hub):
    for body in ([1, 2], "text", 5):
        raw = json.dumps(body).encode()
        data = raw + b"\n" + signature_line(hub.sign(raw)) + b"\n"
        raises(Reason.BAD_RECEIPT, Receipt.parse, data, hub.public)


# -- proof bundles -------------------------------------------------------------------------

TYPES = ("administrative_penalty", "other", "honor", "judicial", "inspection")


@pytest.fixture(scope="module")
def batch(dept_key):
    return signed_batch(dept_key, TYPES)


def bundle_for(batch, index: int) -> ProofBundle:
    tree = MerkleTree.from_lines(batch.lines)
    return ProofBundle.for_record(batch, index, tree.inclusion_proof(index))


def round_trip(bundle: ProofBundle) -> ProofBundle:
    return ProofBundle.from_json(jsonutil.loads(jsonutil.dumps(bundle.to_json())))


def test_bundle_round_trip_for_every_record(batch, dept_key):
    for index in range(len(TYPES)):
        bundle = round_trip(bundle_for(batch, index))
        assert bundle.record_line == batch.lines[index]
        header = bundle.verify(dept_key.public)
        assert header == batch.header
        obj = bundle.to_json()
        assert obj["format"] == "cx-proof/1" and obj["key_id"] == dept_key.key_id
        assert obj["inclusion"]["leaf_index"] == index
        assert obj["batch_header"].encode() == batch.header_bytes


def test_bundle_from_a_parsed_batch(batch, dept_key):
    parsed = parse_batch(batch.to_bytes())
    tree = parsed.verify(dept_key.public)
    bundle = ProofBundle.for_record(parsed, 2, tree.inclusion_proof(2))
    assert round_trip(bundle).verify(dept_key.public).batch_id == batch.header.batch_id


def test_bundle_with_changed_record_line(batch, dept_key):
    bundle = bundle_for(batch, 1)
    obj = bundle.to_json()
    obj["record_line"] = obj["record_line"].replace("其他信息", "其它信息")
    assert obj["record_line"] != bundle.to_json()["record_line"]
    raises(Reason.RECORD_MISMATCH, ProofBundle.from_json(obj).verify, dept_key.public)
    obj = bundle.to_json()
    obj["record_line"] = batch.lines[2].decode()  # another record of the same batch
    raises(Reason.RECORD_MISMATCH, ProofBundle.from_json(obj).verify, dept_key.public)
    obj["record_line"] = bundle.to_json()["record_line"] + " "
    raises(Reason.RECORD_MISMATCH, ProofBundle.from_json(obj).verify, dept_key.public)
    obj["record_line"] = bundle.to_json()["record_line"] + "\n"
    raises(Reason.RECORD_MISMATCH, ProofBundle.from_json(obj).verify, dept_key.public)


def test_bundle_with_changed_header(batch, dept_key):
    obj = bundle_for(batch, 0).to_json()
    obj["batch_header"] = obj["batch_header"].replace('"seq":1', '"seq":2').replace('"prev":null', '"prev":"' + "ab" * 32 + '"')
    raises(Reason.BAD_SIGNATURE, ProofBundle.from_json(obj).verify, dept_key.public)
    obj = bundle_for(batch, 0).to_json()
    obj["batch_header"] = obj["batch_header"].replace("2025-03-31", "2024-03-31")
    raises(Reason.BAD_SIGNATURE, ProofBundle.from_json(obj).verify, dept_key.public)
    obj = bundle_for(batch, 0).to_json()
    obj["batch_header"] = obj["batch_header"].replace('"dept":"amr"', '"dept":"AMR"')
    raises(Reason.BAD_HEADER, ProofBundle.from_json(obj).verify, dept_key.public)


def test_bundle_with_wrong_public_key(batch, other):
    raises(Reason.KEY_ID_MISMATCH, bundle_for(batch, 0).verify, other.public)


def test_bundle_naming_another_key(batch, other):
    obj = {**bundle_for(batch, 0).to_json(), "key_id": other.key_id}
    raises(Reason.KEY_ID_MISMATCH, ProofBundle.from_json(obj).verify, other.public)


def test_bundle_resigned_by_another_key_under_the_department_key_id(batch, dept_key, other):
    obj = {**bundle_for(batch, 0).to_json(), "signature": b64encode(other.sign(batch.header_bytes))}
    raises(Reason.BAD_SIGNATURE, ProofBundle.from_json(obj).verify, dept_key.public)


def test_bundle_wrong_index_or_path(batch, dept_key):
    good = bundle_for(batch, 1).to_json()
    for index in (0, 2, 4, 5, 99):
        obj = json.loads(json.dumps(good))
        obj["inclusion"]["leaf_index"] = index
        raises(Reason.RECORD_MISMATCH, ProofBundle.from_json(obj).verify, dept_key.public)
    for index in (-1, "1", 1.0, True):  # not a leaf index at all
        obj = json.loads(json.dumps(good))
        obj["inclusion"]["leaf_index"] = index
        raises(Reason.BAD_PROOF, ProofBundle.from_json, obj)
    path = good["inclusion"]["path"]
    variants = [path[:-1], path + [path[0]], list(reversed(path)), ["00" * 32] + path[1:], []]
    for variant in variants:
        obj = json.loads(json.dumps(good))
        obj["inclusion"]["path"] = variant
        raises(Reason.RECORD_MISMATCH, ProofBundle.from_json(obj).verify, dept_key.public)


def test_bundle_every_record_line_byte_flip(batch, dept_key):
    bundle = bundle_for(batch, 3)
    for pos in range(len(bundle.record_line)):
        line = bundle.record_line[:pos] + bytes([bundle.record_line[pos] ^ 0x01]) + bundle.record_line[pos + 1:]
        changed = ProofBundle(line, bundle.leaf_index, bundle.path, bundle.header_bytes, bundle.signature,
                              bundle.key_id)
        raises(Reason.RECORD_MISMATCH, changed.verify, dept_key.public)


def test_bundle_signature_changed(batch, dept_key):
    obj = bundle_for(batch, 0).to_json()
    sig = obj["signature"]
    obj["signature"] = ("B" if sig[0] != "B" else "C") + sig[1:]
    raises(Reason.BAD_SIGNATURE, ProofBundle.from_json(obj).verify, dept_key.public)


@pytest.mark.parametrize("change", [
    lambda o: o.pop("record_line"),
    lambda o: o.pop("inclusion"),
    lambda o: o["inclusion"].pop("path"),
    lambda o: o["inclusion"].update(path=["zz"]),
    lambda o: o["inclusion"].update(path="ab"),
    lambda o: o["inclusion"].update(leaf_index="x"),
    lambda o: o.update(record_line=5),
    lambda o: o.update(signature="***"),
    lambda o: o.update(batch_header=None),
])
def test_malformed_bundles(batch, change):
    obj = bundle_for(batch, 0).to_json()
    change(obj)
    raises(Reason.BAD_PROOF, ProofBundle.from_json, obj)


def test_bundle_of_wrong_format_or_shape(batch):
    raises(Reason.UNSUPPORTED_VERSION, ProofBundle.from_json, {**bundle_for(batch, 0).to_json(), "format": "cx-proof/2"})
    for obj in ([], "x", 1, None, {}):
        raises(Reason.BAD_PROOF, ProofBundle.from_json, obj)


def test_single_record_batch_bundle(dept_key):
    one = signed_batch(dept_key, ("other",))
    bundle = round_trip(ProofBundle.for_record(one, 0, []))
    assert bundle.verify(dept_key.public).count == 1
    assert leaf_hash(one.lines[0]).hex() == one.header.root


def test_bundle_whose_record_line_is_not_a_record(dept_key):
    """A signed batch may hold an unreadable line (rejected by the hub); its proof still holds but says so."""
    lines = [record_line("other"), b'{"not":"a record"}']
    batch = build_batch(dept_key, dept="amr", node="n1", seq=1, prev=None, lines=lines, schemas={"other": 1})
    bundle = ProofBundle.for_record(batch, 1, MerkleTree.from_lines(lines).inclusion_proof(1))
    raises(Reason.BAD_RECORD, bundle.verify, dept_key.public)
