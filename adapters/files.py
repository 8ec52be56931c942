"""Drop-folder source: department staff drop CSV or XLSX exports into a folder; each file is one unit.

Source options ([sources.<name>] with adapter = "files"):
    folder          the drop folder (required); processed/ and failed/ are made inside it
    encoding        "auto" (default: UTF-8 with or without BOM, UTF-16 with BOM, else GB18030,
                    the superset of GBK), or a codec name such as "gbk", "gb18030", "utf-8"
    delimiter       CSV field separator, default ","
    sheet           XLSX sheet name, default the first sheet
    header_row      the row (CSV: line) holding the column names, default 1; blank rows before it are skipped
    settle_seconds  files modified more recently than this are left alone (still being written), default 2

Stream options ([[streams]]):
    pattern         a glob such as "penalties*.csv", matched case-insensitively; a file belongs to
                    the first stream whose pattern matches it

read() yields one Chunk per waiting file, oldest first, with all its rows (chunk_size does not split
a file), position None and unit "<file name>:<sha256 of its bytes>". A file that cannot be read at
all yields a Chunk with no rows and `error` set: for text that does not decode, the error names the
file, the line, the byte and the encoding the file most likely has (broken UTF-8, GBK, Big5, UTF-16). Files whose names start with "." or "~$" or end with
.tmp, .part, .partial or .crdownload are never picked up. Cell values are strings (surrounding spaces
stripped, empty cells None); XLSX numbers without a fraction lose the ".0", dates become ISO strings.

finish() moves the file to processed/ (it was read; invalid rows are listed in the report) or to
failed/ (it could not be read, or the node gave up on it), and writes <name>.report.txt beside it.
A file in failed/ may be put back into the folder (corrected, or after the configuration changed):
it is read again. reread() finds rows of a processed file again (by the file's hash and the rows' keys)
when the node re-reads rows it rejected.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from cx_adapters.base import Chunk, Row, Source, SourceError, StreamConfigError, StreamSpec, UnitReport

IGNORED_PREFIXES = (".", "~$")  # hidden files, Office lock files
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")  # copies and downloads in progress
CSV_SUFFIXES = (".csv", ".txt")
XLSX_SUFFIXES = (".xlsx", ".xlsm")


class Unreadable(Exception):
    """The file cannot be read at all; the message (Chinese and English) goes into Chunk.error."""


class FileSource(Source):
    """CSV and XLSX files dropped into one folder."""

    name = "files"

    def __init__(self, options: Mapping[str, Any], streams: Sequence[StreamSpec]):
        super().__init__(options, streams)
        if not options.get("folder"):
            raise StreamConfigError("files 数据源需要 folder the files source needs a folder")
        self.folder = Path(options["folder"]).expanduser()
        self.encoding = str(options.get("encoding", "auto"))
        self.delimiter = str(options.get("delimiter", ","))
        self.sheet: str | None = options.get("sheet")
        try:
            self.header_row = int(options.get("header_row", 1))
            self.settle_seconds = float(options.get("settle_seconds", 2))
        except (TypeError, ValueError):
            raise StreamConfigError("header_row 与 settle_seconds 须为数字 "
                                    "header_row and settle_seconds must be numbers") from None
        if self.header_row < 1 or len(self.delimiter) != 1:
            raise StreamConfigError("header_row 从 1 开始，delimiter 须为单个字符 header_row starts at 1; delimiter is "
                                    "one character")
        if self.encoding != "auto":
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise StreamConfigError(f"未知的编码 unknown encoding {self.encoding!r}") from None
        for stream in self.streams:
            if not stream.options.get("pattern"):
                raise StreamConfigError(f"数据流 {stream.name} 需要 pattern stream {stream.name!r} needs a file name "
                                        "pattern")

    def check(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"文件夹不存在 folder not found: {self.folder}")
        if not os.access(self.folder, os.R_OK | os.W_OK | os.X_OK):
            raise SourceError(f"文件夹无读写权限 the node cannot read and move files in {self.folder}")

    def read(self, stream: StreamSpec, position: Any, chunk_size: int) -> Iterator[Chunk]:
        for path, seen in self._waiting(stream):
            chunk = self._read_file(stream, path, seen)
            if chunk is not None:
                yield chunk

    def ref(self, stream: StreamSpec, chunk: Chunk, row: Row) -> Any:
        """The file (by name and hash) and the row's key: enough to find the row again in processed/."""
        return {"unit": chunk.unit, "key": list(row.key)} if chunk.unit else None

    def reread(self, stream: StreamSpec, refs: Sequence[Any]) -> Iterator[Chunk]:
        """Rows of files taken before, found again by the file's hash (in processed/ or failed/) and their keys."""
        wanted: dict[str, set[tuple[str, ...]]] = {}
        for ref in refs:
            if isinstance(ref, dict) and isinstance(ref.get("unit"), str) and isinstance(ref.get("key"), list):
                wanted.setdefault(ref["unit"], set()).add(tuple(ref["key"]))
        for unit, keys in wanted.items():
            name, _, digest = unit.rpartition(":")
            found = self._kept_file(name, digest)
            if found is None:
                continue  # moved away or deleted: its rows are no longer at the source
            try:
                rows = self._rows(stream, name, self._records(name, found))
            except Unreadable:
                continue
            rows = [r for r in rows if r.key in keys]
            if rows:
                yield Chunk(stream.name, rows, unit=unit)

    def _kept_file(self, name: str, digest: str) -> bytes | None:
        """The bytes of a file taken before (it may carry a time stamp in its name since), if still kept."""
        stem, suffix = Path(name).stem, Path(name).suffix
        for folder in (self.folder / "processed", self.folder / "failed", self.folder):
            try:
                candidates = [e for e in os.scandir(folder) if e.is_file() and (
                    e.name == name or (e.name.startswith(stem + ".") and e.name.endswith(suffix)))]
            except OSError:
                continue
            for entry in candidates:
                try:
                    data = Path(entry.path).read_bytes()
                except OSError:
                    continue
                if hashlib.sha256(data).hexdigest() == digest:
                    return data
        return None

    def finish(self, stream: StreamSpec, chunk: Chunk, report: UnitReport) -> None:
        if chunk.unit is None:
            return
        name, _, digest = chunk.unit.rpartition(":")
        source = self.folder / name
        try:
            if hashlib.sha256(source.read_bytes()).hexdigest() != digest:
                return  # a new file with the same name arrived meanwhile; it is a unit of its own
        except OSError:
            return  # already moved away, or not ours to move
        failed = chunk.error is not None or report.error is not None
        target = _free_name(self.folder / ("failed" if failed else "processed"), name)
        target.parent.mkdir(exist_ok=True)
        try:
            os.replace(source, target)
        except FileNotFoundError:
            return
        _write_atomically(target.with_name(target.name + ".report.txt"),
                          report_text(stream.name, name, target, digest, chunk, report))

    # -- finding files ---------------------------------------------------------------------------

    def _owner(self, name: str) -> StreamSpec | None:
        folded = name.casefold()
        return next((s for s in self.streams if fnmatchcase(folded, str(s.options["pattern"]).casefold())), None)

    def _waiting(self, stream: StreamSpec) -> list[tuple[Path, os.stat_result]]:
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            raise SourceError(f"无法读取文件夹 cannot list folder {self.folder}: {exc.strerror}") from None
        settled_before = time.time() - self.settle_seconds
        found = []
        for entry in entries:
            name = entry.name
            if name.startswith(IGNORED_PREFIXES) or name.lower().endswith(IGNORED_SUFFIXES):
                continue
            try:
                if not entry.is_file() or self._owner(name) is not stream:
                    continue
                stat = entry.stat()
            except OSError:
                continue
            if stat.st_mtime <= settled_before:
                found.append((Path(entry.path), stat))
        return sorted(found, key=lambda item: (item[1].st_mtime_ns, item[0].name))

    # -- reading one file ------------------------------------------------------------------------

    def _read_file(self, stream: StreamSpec, path: Path, seen: os.stat_result) -> Chunk | None:
        try:
            data = path.read_bytes()
            now = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            # no hash without the bytes: finish() leaves the file alone, the error is reported once per name
            return Chunk(stream.name, [], unit=f"{path.name}:unreadable",
                         error=f"无法读取文件 cannot read the file: {exc.strerror}")
        if (now.st_mtime_ns, now.st_size) != (seen.st_mtime_ns, len(data)):
            return None  # changed while we looked: still being written, take it next time
        unit = f"{path.name}:{hashlib.sha256(data).hexdigest()}"
        try:
            rows = self._rows(stream, path.name, self._records(path.name, data))
        except Unreadable as exc:
            return Chunk(stream.name, [], unit=unit, error=str(exc))
        return Chunk(stream.name, rows, unit=unit)

    def _records(self, name: str, data: bytes) -> Iterator[tuple[str, int, list[str | None]]]:
        """(locator, row number, cells) for every row of the file, blank ones included."""
        suffix = Path(name).suffix.lower()
        if suffix in CSV_SUFFIXES:
            return self._csv_records(name, data)
        if suffix in XLSX_SUFFIXES:
            return self._xlsx_records(name, data)
        raise Unreadable(f"不支持的文件类型 unsupported file type {suffix or '(none)'}: "
                         f"请另存为 CSV 或 XLSX, save it as CSV or XLSX")

    def _csv_records(self, name: str, data: bytes) -> Iterator[tuple[str, int, list[str | None]]]:
        reader = csv.reader(io.StringIO(decode(data, self.encoding, name), newline=""), delimiter=self.delimiter)
        line = 1
        try:
            for record in reader:
                yield f"{name} line {line}", line, [cell_text(c) for c in record]
                line = reader.line_num + 1
        except csv.Error as exc:
            raise Unreadable(f"CSV 格式错误 malformed CSV at line {reader.line_num}: {exc}") from None

    def _xlsx_records(self, name: str, data: bytes) -> Iterator[tuple[str, int, list[str | None]]]:
        import openpyxl  # only files sources that meet an XLSX pay for the import

        try:
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:  # a damaged upload can fail anywhere in the zip/XML stack
            raise Unreadable(f"无法打开 Excel 文件 cannot open the XLSX file: {exc or type(exc).__name__}") from None
        try:
            sheet = self.sheet or book.sheetnames[0]
            if sheet not in book.sheetnames:
                raise Unreadable(f"找不到工作表 sheet {sheet!r} not found; sheets 现有工作表: {', '.join(book.sheetnames)}")
            try:
                for number, values in enumerate(book[sheet].iter_rows(min_row=1, values_only=True), start=1):
                    yield f"{name} sheet {sheet} row {number}", number, [cell_text(v) for v in values]
            except Unreadable:
                raise
            except Exception as exc:
                raise Unreadable(f"Excel 文件已损坏 the XLSX file is damaged: {exc or type(exc).__name__}") from None
        finally:
            book.close()

    def _rows(self, stream: StreamSpec, name: str, records: Iterable[tuple[str, int, list[str | None]]]) -> list[Row]:
        header: list[str | None] | None = None
        key_columns: list[str] = []
        rows = []
        for locator, number, cells in records:
            if number < self.header_row or not any(cells):
                continue
            if header is None:
                header, key_columns = _header(stream, cells, locator)
                continue
            values = {h: (cells[i] if i < len(cells) else None) for i, h in enumerate(header) if h}
            rows.append(Row(tuple(values[k] or "" for k in key_columns), values, locator))
        if header is None:
            raise Unreadable(f"文件没有表头 no header row (looked from row {self.header_row} on): {name}")
        return rows


def _header(stream: StreamSpec, cells: list[str | None], locator: str) -> tuple[list[str | None], list[str]]:
    """The column names and the stream's key columns among them (exact, else ignoring case)."""
    names = [c for c in cells if c]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise Unreadable(f"表头列名重复 duplicate column names in the header ({locator}): {', '.join(duplicated)}")
    keys, missing = [], []
    for key in stream.key:
        found = key if key in names else next((n for n in names if n.casefold() == key.casefold()), None)
        (keys if found else missing).append(found or key)
    if missing:
        raise Unreadable(f"缺少主键列 key column(s) missing: {', '.join(missing)} "
                         f"(表头 header at {locator}: {', '.join(names)})")
    return cells, keys


def decode(data: bytes, encoding: str, name: str = "the file") -> str:
    """The text of a CSV file; "auto" reads UTF-8 (BOM stripped), UTF-16 with a BOM, or GB18030 (GBK's superset).

    Text that does not decode, or that decodes only into characters no Chinese office writes (Big5 read
    as GBK), raises Unreadable naming the line, the byte and the encoding the file most likely has.
    """
    if encoding != "auto":
        codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            raise Unreadable(_not_decodable(name, data, encoding, exc)) from None
        if codecs.lookup(encoding).name in ("gbk", "gb2312", "gb18030") and _looks_big5(text, data):
            raise Unreadable(_big5(name))
        return text
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise Unreadable(_not_decodable(name, data, "utf-16", exc)) from None
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Unreadable(_broken_utf8(name, data)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_failure = exc
    if _mostly_utf8(data):
        raise Unreadable(_broken_utf8(name, data))
    if data.count(b"\x00") * 10 > len(data):
        raise Unreadable(f"文件「{name}」似乎是没有字节顺序标记的 UTF-16 编码，请另存为 UTF-8 或 GBK / {name} looks like "
                         "UTF-16 without a byte order mark: save it as UTF-8 or GBK")
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError as exc:
        if _plausible(_decoded(data, "big5")) >= 0.95:
            raise Unreadable(_big5(name)) from None
        raise Unreadable(_not_decodable(name, data, "gb18030", exc, utf8_failure)) from None
    if _looks_big5(text, data):
        raise Unreadable(_big5(name))
    return text


# characters Chinese office text is made of, beyond ASCII: ideographs, CJK and full-width punctuation, ·, —, “”
_COMMON = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x3000, 0x303F), (0xFF00, 0xFFEF), (0x2010, 0x2027),
           (0x00B7, 0x00B7))


def _plausible(text: str | None) -> float:
    """The share of non-ASCII characters in `text` that Chinese office text is made of (0 when it did not decode)."""
    if text is None:
        return 0.0
    wide = [ord(c) for c in text if ord(c) > 127]
    if not wide:
        return 1.0
    return sum(1 for c in wide if any(lo <= c <= hi for lo, hi in _COMMON)) / len(wide)


def _looks_big5(gbk_text: str, data: bytes) -> bool:
    """Read as GBK the text is kana, Greek and private-use characters; read as Big5 it is Chinese."""
    return _plausible(gbk_text) < 0.9 and _plausible(_decoded(data, "big5")) >= 0.95


def _decoded(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        return None


def _mostly_utf8(data: bytes) -> bool:
    """UTF-8 with a few bad bytes (a paste from another encoding), not a file in another encoding."""
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    wide = sum(1 for c in text if ord(c) >= 0x2E80 and c != "\ufffd")  # 3-byte UTF-8: CJK
    return wide >= 4 * bad


def _bad_lines(data: bytes, codec: str) -> list[tuple[int, int]]:
    """(line number, byte offset in the file) of each line that does not decode with `codec`."""
    out, offset = [], 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode(codec)
        except UnicodeDecodeError as exc:
            out.append((number, offset + exc.start))
        offset += len(line) + 1
    return out


def _lines_text(bad: list[tuple[int, int]]) -> tuple[str, str]:
    (line, byte), rest = bad[0], [n for n, _ in bad[1:]]
    more = ", ".join(map(str, rest[:10])) + (" …" if len(rest) > 10 else "")
    return (f"第 {line} 行（文件第 {byte + 1} 字节）" + (f"，另有第 {more} 行" if rest else ""),
            f"line {line} (byte {byte + 1} of the file)" + (f", also line(s) {more}" if rest else ""))


def _broken_utf8(name: str, data: bytes) -> str:
    zh, en = _lines_text(_bad_lines(data.removeprefix(codecs.BOM_UTF8), "utf-8") or [(1, 0)])
    return (f"文件「{name}」不是有效的 UTF-8：{zh}有无法解码的字节。文件其余部分是 UTF-8，可能混入了其他编码（如 GBK）"
            f"的文字；请修正后另存为 UTF-8 再放回 / {name} is not valid UTF-8 at {en}; the rest of the file is UTF-8, so "
            "text in another encoding (e.g. GBK) was probably pasted in: fix it, save as UTF-8 and drop it again")


def _big5(name: str) -> str:
    return (f"文件「{name}」似乎是繁体中文 Big5 编码（按 GBK 读取会成为乱码）：请另存为 UTF-8 或 GBK，或为该数据源设置 "
            f"encoding = \"big5\" / {name} looks like Big5 (traditional Chinese): read as GBK it is garbled. Save it as "
            "UTF-8 or GBK, or set encoding = \"big5\" for this source")


def _not_decodable(name: str, data: bytes, codec: str, exc: UnicodeDecodeError,
                   utf8_failure: UnicodeDecodeError | None = None) -> str:
    decoder = "utf-8-sig" if codecs.lookup(codec).name == "utf-8" else codec
    zh, en = _lines_text(_bad_lines(data.removeprefix(codecs.BOM_UTF8), decoder)
                         or [(data[:exc.start].count(b"\n") + 1, exc.start)])
    tried_zh, tried_en = ("UTF-8 或 GBK", "UTF-8 or GBK") if utf8_failure else (codec, codec)
    guess = next((label for other, label in (("utf-8", "UTF-8"), ("gb18030", "GBK"), ("big5", "Big5"))
                  if codecs.lookup(other).name != codecs.lookup(codec).name
                  and _plausible(_decoded(data, other)) >= 0.95), None)
    hint_zh = f"该文件似乎是 {guess} 编码" if guess else "请确认文件的编码"
    hint_en = f"the file looks like {guess}" if guess else "check which encoding the file has"
    return (f"文件「{name}」无法按 {tried_zh} 解码：{zh}；{hint_zh}，请另存为 UTF-8 再放回，或设置 encoding / {name} does "
            f"not decode as {tried_en} at {en}; {hint_en}: save it as UTF-8 and drop it again, or set encoding")


def cell_text(value: Any) -> str | None:
    """A cell as the text a person sees: no ".0" on whole numbers, ISO dates, None for empty."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def report_text(stream: str, name: str, target: Path, digest: str, chunk: Chunk, report: UnitReport) -> str:
    """The report left beside a processed or failed file, for the staff who dropped it."""
    failed = chunk.error is not None or report.error is not None
    lines = [
        "信用信息交换 文件处理报告 / Credit Exchange file report",
        f"文件 file: {name}",
        f"保存为 stored as: {target.parent.name}/{target.name}",
        f"SHA-256: {digest}",
        f"数据流 stream: {stream}",
        f"处理时间 processed at: {china_now()} (北京时间 Asia/Shanghai)",
        "结果 result: " + ("未处理 failed — 文件未被接收 nothing was taken from this file" if failed else
                          "已处理 processed — 合格的行已接收 the valid rows were taken"),
    ]
    for error in dict.fromkeys(e for e in (chunk.error, report.error) if e):  # each problem once
        lines.append(f"错误 error: {error}")
    if chunk.error is not None:
        lines.append("处理方法 what to do: 修正文件（或数据源配置）后，将文件从 failed/ 放回文件夹，即会重新读取 / fix the file "
                     "(or the source's configuration), then put it back from failed/ into the folder: it is read again")
    lines += [f"读取行数 rows read: {report.rows}", f"合格 valid: {report.valid}", f"不合格 invalid: {report.invalid}"]
    if report.rejections:
        lines += ["", "不合格的行 invalid rows:"]
        for rejection in report.rejections:
            lines.append(str(rejection.get("locator", "?")))
            for e in rejection.get("errors", []):
                value = "" if e.get("value") is None else f"  值 value: {e['value']!r}"
                lines.append(f"  - {e.get('path') or '(记录 record)'} [{e.get('rule', '')}] "
                             f"{e.get('message_zh', '')} / {e.get('message_en', '')}{value}")
    return "\n".join(lines) + "\n"


def china_now() -> str:
    """Now in Asia/Shanghai, as people there read it (the machine's own zone may be UTC)."""
    try:
        from zoneinfo import ZoneInfo

        zone: dt.tzinfo = ZoneInfo("Asia/Shanghai")
    except Exception:  # noqa: BLE001 - no time zone database: China has had no daylight saving since 1991
        zone = dt.timezone(dt.timedelta(hours=8))
    return dt.datetime.now(zone).strftime("%Y-%m-%d %H:%M:%S")


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or with a timestamp (and a counter) before the suffix when that is taken."""
    def taken(p: Path) -> bool:
        return p.exists() or p.with_name(p.name + ".report.txt").exists()

    target = folder / name
    if not taken(target):
        return target
    stem, suffix = Path(name).stem, Path(name).suffix
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target, n = folder / f"{stem}.{stamp}{suffix}", 1
    while taken(target):
        n += 1
        target = folder / f"{stem}.{stamp}-{n}{suffix}"
    return target


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, "utf-8")
    os.replace(temporary, path)
