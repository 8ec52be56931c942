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
all yields a Chunk with no rows and `error` set. Files whose names start with "." or "~$" or end with
.tmp, .part, .partial or .crdownload are never picked up. Cell values are strings (surrounding spaces
stripped, empty cells None); XLSX numbers without a fraction lose the ".0", dates become ISO strings.

finish() moves the file to processed/ (it was read; invalid rows are listed in the report) or to
failed/ (it could not be read, or the node gave up on it), and writes <name>.report.txt beside it.
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

from cx_adapters.base import Chunk, Row, Source, SourceError, StreamSpec, UnitReport

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
            raise SourceError("files 数据源需要 folder the files source needs a folder")
        self.folder = Path(options["folder"]).expanduser()
        self.encoding = str(options.get("encoding", "auto"))
        self.delimiter = str(options.get("delimiter", ","))
        self.sheet: str | None = options.get("sheet")
        try:
            self.header_row = int(options.get("header_row", 1))
            self.settle_seconds = float(options.get("settle_seconds", 2))
        except (TypeError, ValueError):
            raise SourceError("header_row 与 settle_seconds 须为数字 "
                              "header_row and settle_seconds must be numbers") from None
        if self.header_row < 1 or len(self.delimiter) != 1:
            raise SourceError("header_row 从 1 开始，delimiter 须为单个字符 header_row starts at 1; delimiter is one character")
        if self.encoding != "auto":
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise SourceError(f"未知的编码 unknown encoding {self.encoding!r}") from None
        for stream in self.streams:
            if not stream.options.get("pattern"):
                raise SourceError(f"数据流 {stream.name} 需要 pattern stream {stream.name!r} needs a file name pattern")

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
        reader = csv.reader(io.StringIO(decode(data, self.encoding), newline=""), delimiter=self.delimiter)
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


def decode(data: bytes, encoding: str) -> str:
    """The text of a CSV file; "auto" tries UTF-8 (BOM stripped), UTF-16 with a BOM, then GB18030."""
    if encoding == "auto":
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            candidates = ["utf-16"]
        elif data.startswith(codecs.BOM_UTF8):
            candidates = ["utf-8-sig"]
        else:
            candidates = ["utf-8", "gb18030"]
    else:
        candidates = ["utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding]
    for codec in candidates:
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            failure = exc
    line = data[:failure.start].count(b"\n") + 1
    raise Unreadable(f"无法识别文件编码 cannot decode the file as {' or '.join(candidates)} "
                     f"(line {line}, byte {failure.start}); 请另存为 UTF-8 save it as UTF-8, or set encoding")


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
        f"处理时间 processed at: {dt.datetime.now().astimezone().isoformat(' ', 'seconds')}",
        "结果 result: " + ("未处理 failed — 文件未被接收 nothing was taken from this file" if failed else
                          "已处理 processed — 合格的行已接收 the valid rows were taken"),
    ]
    for error in (chunk.error, report.error):
        if error:
            lines.append(f"错误 error: {error}")
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
