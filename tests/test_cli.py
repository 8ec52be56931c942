"""The real `cx` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cx.protocol import jsonutil
from cx.protocol.bundle import ProofBundle
from cx.protocol.keys import PublicKey, SigningKey
from cx.protocol.merkle import MerkleTree
from examples import ID_NO, example, signed_batch

CX = Path(sys.executable).with_name("cx")


def cx(*args: str | os.PathLike, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(CX)] if CX.exists() else [sys.executable, "-m", "cx.cli"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "LANG": "C.UTF-8"}
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=60, cwd=cwd, env=env)


def jsonl(path: Path, items: list, *, bom: bool = False) -> Path:
    text = "\n".join(item if isinstance(item, str) else json.dumps(item, ensure_ascii=False) for item in items) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_help_lists_the_commands():
    result = cx("--help")
    assert result.returncode == 0, result.stderr
    for command in ("keys", "validate", "verify"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), result.stdout


def test_console_script_is_installed():
    assert CX.exists() and os.access(CX, os.X_OK)
    assert shutil.which("cx", path=str(CX.parent)) == str(CX)


# -- cx keys init --------------------------------------------------------------------------------

def test_keys_init(tmp_path):
    result = cx("keys", "init", "--dept", "amr", "--dir", tmp_path / "keys")
    assert result.returncode == 0, result.stderr
    key_id = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", key_id), result.stdout
    private, public = tmp_path / "keys" / "amr.key", tmp_path / "keys" / "amr.pub"
    assert PublicKey.load(public).key_id == key_id
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert SigningKey.load(private).key_id == key_id
    assert "0600" in result.stderr and str(public) in result.stderr

    again = cx("keys", "init", "--dept", "amr", "--dir", tmp_path / "keys")
    assert again.returncode == 2
    assert again.stdout == ""
    assert "amr.key" in again.stderr or "amr.pub" in again.stderr
    assert PublicKey.load(public).key_id == key_id  # untouched


@pytest.mark.parametrize("dept", ["AMR", "amr/../x", "amr\n"])
def test_keys_init_refuses_invalid_dept(tmp_path, dept):
    result = cx("keys", "init", "--dept", dept, "--dir", tmp_path)
    assert result.returncode == 2, result
    assert "invalid department id" in result.stderr and "部门标识无效" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- cx validate ---------------------------------------------------------------------------------

def penalty_without(*fields: str) -> dict:
    data = example("administrative_penalty")
    for f in fields:
        data.pop(f)
    return data


def test_validate_mixed_file(tmp_path):
    bad_uscc = {**example("administrative_penalty"), "uscc": "91350100M000100Y4Z", "legal_rep_id_no": ID_NO * 3}
    path = jsonl(tmp_path / "p.jsonl", [example("administrative_penalty"), penalty_without("facts"), "",
                                        bad_uscc, example("administrative_penalty")])
    result = cx("validate", "--type", "administrative_penalty", path)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert re.findall(r"^line (\d+): invalid", out, re.M) == ["2", "4"]
    assert "facts" in out and "[required]" in out and "违法事实" in out and "is missing" in out
    assert "[format:uscc]" in out and "统一社会信用代码" in out and "unified social credit code" in out
    assert "[max_length]" in out and ID_NO not in out
    assert "4 records" in out and "2 valid" in out and "2 invalid" in out


def test_validate_all_valid(tmp_path):
    path = jsonl(tmp_path / "ok.jsonl", [example("other"), example("other")])
    result = cx("validate", "--type", "other", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "invalid 不合格\n" not in result.stdout and "2 valid" in result.stdout


def test_validate_json_array(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([example("honor"), {**example("honor"), "level": "区级"}], ensure_ascii=False, indent=2))
    result = cx("validate", "--type", "honor", path)
    assert result.returncode == 1
    assert re.findall(r"^line (\d+): invalid", result.stdout, re.M) == ["2"]
    assert "[enum]" in result.stdout and "荣誉级别" in result.stdout


def test_validate_json_output(tmp_path):
    path = jsonl(tmp_path / "p.jsonl", [example("administrative_penalty"), penalty_without("fine_amount")])
    result = cx("validate", "--type", "administrative_penalty", "--format", "json", path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [set(r) for r in report] == [{"line", "valid", "errors"}] * 2
    assert [(r["line"], r["valid"]) for r in report] == [(1, True), (2, False)]
    assert report[0]["errors"] == []
    (error,) = report[1]["errors"]
    assert error == {"path": "fine_amount", "rule": "fine_amount_when_fined", "value": None,
                     "message_zh": error["message_zh"], "message_en": error["message_en"]}
    assert "罚款金额" in error["message_zh"] and "fine_amount" in error["message_en"]


def test_validate_malformed_line_is_one_invalid_line(tmp_path):
    path = jsonl(tmp_path / "m.jsonl", [example("other"), '{"subject_name": "x",', example("other"),
                                        '{"a":1,"a":2}', '{"subject_name": NaN}'])
    result = cx("validate", "--type", "other", "--format", "json", path)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert [(r["line"], r["valid"]) for r in report] == [(1, True), (2, False), (3, True), (4, False), (5, False)]
    assert [r["errors"][0]["rule"] for r in report if not r["valid"]] == ["bad_json", "duplicate_key",
                                                                          "non_finite_number"]
    assert all(r["errors"][0]["message_zh"] for r in report if not r["valid"])


def test_validate_text_output_of_a_malformed_line(tmp_path):
    path = jsonl(tmp_path / "m.jsonl", ["not json", example("other")])
    result = cx("validate", "--type", "other", path)
    assert result.returncode == 1
    assert "line 1: invalid" in result.stdout and "[bad_json]" in result.stdout and "JSON" in result.stdout
    assert "line 2" not in result.stdout


def test_validate_unknown_type(tmp_path):
    path = jsonl(tmp_path / "x.jsonl", [example("other")])
    result = cx("validate", "--type", "no_such_type", path)
    assert result.returncode == 2
    assert "unknown record type" in result.stderr and "administrative_penalty" in result.stderr
    assert cx("validate", "--type", "other", "--schema-version", "99", path).returncode == 2


def test_validate_missing_file(tmp_path):
    result = cx("validate", "--type", "other", tmp_path / "missing.jsonl")
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_validate_bom_and_crlf(tmp_path):
    path = tmp_path / "bom.jsonl"
    lines = [json.dumps(example("other"), ensure_ascii=False)] * 2
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    result = cx("validate", "--type", "other", path)
    assert result.returncode == 0, result.stdout
    array = tmp_path / "bom.json"
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps([example("other")], ensure_ascii=False).encode())
    assert cx("validate", "--type", "other", array).returncode == 0


# -- cx verify -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify")
    key, other = SigningKey.generate(), SigningKey.generate()
    batch = signed_batch(key, ("administrative_penalty", "other", "honor"))
    bundle = ProofBundle.for_record(batch, 1, MerkleTree.from_lines(batch.lines).inclusion_proof(1))
    (folder / "amr.pub").write_text(key.public.pem())
    (folder / "other.pub").write_text(other.public.pem())
    (folder / "bundle.json").write_bytes(jsonutil.dumps(bundle.to_json()))
    tampered = bundle.to_json()
    tampered["record_line"] = tampered["record_line"].replace("其他信息", "其他信息！")
    (folder / "tampered.json").write_bytes(jsonutil.dumps(tampered))
    return folder, key, batch


def test_verify_valid_bundle(bundle_files):
    folder, key, batch = bundle_files
    result = cx("verify", folder / "bundle.json", "--public-key", folder / "amr.pub")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("VALID")
    assert "other-2" in result.stdout and batch.header.batch_id in result.stdout and key.key_id in result.stdout
    assert "record 2 of 3" in result.stdout


def test_verify_tampered_bundle(bundle_files):
    folder, _, _ = bundle_files
    result = cx("verify", folder / "tampered.json", "--public-key", folder / "amr.pub")
    assert result.returncode == 1
    assert "INVALID" in result.stdout and "record_mismatch" in result.stdout


def test_verify_wrong_key(bundle_files):
    folder, _, _ = bundle_files
    result = cx("verify", folder / "bundle.json", "--public-key", folder / "other.pub")
    assert result.returncode == 1
    assert "INVALID" in result.stdout and "key_id_mismatch" in result.stdout


def test_verify_unusable_inputs(bundle_files, tmp_path):
    folder, _, _ = bundle_files
    assert cx("verify", tmp_path / "none.json", "--public-key", folder / "amr.pub").returncode == 2
    assert cx("verify", folder / "bundle.json", "--public-key", tmp_path / "none.pub").returncode == 2
    (tmp_path / "garbage.pub").write_text("not a key")
    assert cx("verify", folder / "bundle.json", "--public-key", tmp_path / "garbage.pub").returncode == 2
    (tmp_path / "garbage.json").write_text("{")
    result = cx("verify", tmp_path / "garbage.json", "--public-key", folder / "amr.pub")
    assert result.returncode == 1 and "bad_json" in result.stdout


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_hub_run_caps_malloc_arenas_unless_the_environment_says_otherwise():
    ask = "from cx.hub.cli import fewer_malloc_arenas; print(fewer_malloc_arenas())"
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    assert subprocess.run([sys.executable, "-c", ask], env=env, capture_output=True, text=True).stdout == "True\n"
    for extra in ({"MALLOC_ARENA_MAX": "4"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}):
        done = subprocess.run([sys.executable, "-c", ask], env={**env, **extra}, capture_output=True, text=True)
        assert done.stdout == "False\n"
