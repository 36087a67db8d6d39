"""OHLCV candles: the platform's time series of prices (``marketdata_candles``), shared by every tenant.

Candles come from CSV files, from an exchange through ccxt, or from the sample data that the
``backtesting`` package ships (BTC/USD monthly 2012-2024, EUR/USD hourly). Gaps are the expected
candle times missing between the first and the last stored candle of a series.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from botcriptofy import Kernel, ProblemError

from ._models import candles

TIMEFRAME = re.compile(r"^(\d+)([mhdwM])$")
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Candle:
    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "open": self.open, "high": self.high, "low": self.low, "close": self.close, "volume": self.volume}


def parse_timeframe(timeframe: str, field: str = "timeframe") -> tuple[int, str]:
    match = TIMEFRAME.match(timeframe)
    if match is None or int(match.group(1)) < 1:
        raise ProblemError(
            422,
            "Invalid timeframe",
            f"'{timeframe}' is not a timeframe such as 1m, 5m, 1h, 1d, 1w or 1M.",
            errors=[{"field": field, "message": "use a number and a unit: m, h, d, w or M (months)"}],
        )
    return int(match.group(1)), match.group(2)


def step(time: datetime, timeframe: str) -> datetime:
    """The next candle's open time after ``time``."""
    count, unit = parse_timeframe(timeframe)
    if unit == "M":
        # Monthly candles keep their day of month where it exists (backtesting's BTC/USD sample is month-end).
        month = time.month - 1 + count
        year, month = time.year + month // 12, month % 12 + 1
        last_day = _days_in_month(year, month)
        day = last_day if time.day >= _days_in_month(time.year, time.month) else min(time.day, last_day)
        return time.replace(year=year, month=month, day=day)
    return time + timedelta(seconds=count * UNIT_SECONDS[unit])


def _days_in_month(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def find_gaps(times: Sequence[datetime], timeframe: str) -> list[dict[str, Any]]:
    """The runs of expected candle times missing between consecutive stored candles."""
    gaps = []
    for previous, current in itertools.pairwise(times):
        expected = step(previous, timeframe)
        if expected < current:
            missing = 0
            last = expected
            probe = expected
            while probe < current:
                missing += 1
                last = probe
                probe = step(probe, timeframe)
            gaps.append({"start": expected, "end": last, "missing": missing})
    return gaps


def _to_time(value: str, row: int) -> datetime:
    text = value.strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            number = float(text)
            return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise ProblemError(
            422,
            "Invalid CSV",
            f"Row {row}: '{value}' is not a time (ISO 8601 or epoch seconds/milliseconds).",
            errors=[{"field": "csv", "message": f"row {row}: bad time"}],
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_csv(text: str) -> list[Candle]:
    """Candles from CSV with a header naming time (or date/timestamp), open, high, low, close and optionally volume."""
    reader = csv.DictReader(io.StringIO(text.strip()))
    header = {name.strip().lower(): name for name in reader.fieldnames or ()}
    time_key = next((header[k] for k in ("time", "timestamp", "date", "datetime") if k in header), None)
    missing = [k for k in ("open", "high", "low", "close") if k not in header]
    if time_key is None or missing:
        needed = ", ".join((["time"] if time_key is None else []) + missing)
        raise ProblemError(
            422,
            "Invalid CSV",
            f"The CSV header lacks: {needed} (time, open, high, low, close[, volume]).",
            errors=[{"field": "csv", "message": f"missing columns: {needed}"}],
        )
    out = []
    for number, row in enumerate(reader, start=2):
        try:
            values = [float(row[header[k]]) for k in ("open", "high", "low", "close")]
            volume = float(row[header["volume"]]) if "volume" in header and row[header["volume"]] not in (None, "") else 0.0
        except (TypeError, ValueError):
            raise ProblemError(
                422,
                "Invalid CSV",
                f"Row {number}: open, high, low, close and volume must be numbers.",
                errors=[{"field": "csv", "message": f"row {number}: not a number"}],
            ) from None
        out.append(Candle(_to_time(row[time_key], number), *values, volume))
    return out


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def store(kernel: Kernel, exchange: str, symbol: str, timeframe: str, rows: Iterable[Candle]) -> int:
    """Insert or replace candles; return how many were written."""
    parse_timeframe(timeframe)
    db = kernel.database()
    insert = _insert(db.dialect)
    written = 0
    batch: list[dict[str, Any]] = []
    async with db.session(system=True, write_lock=True) as session:
        for candle in rows:
            batch.append({"exchange": exchange, "symbol": symbol, "timeframe": timeframe, **candle.as_dict()})
            if len(batch) >= CHUNK:
                written += await _flush(session, insert, batch)
                batch = []
        if batch:
            written += await _flush(session, insert, batch)
    return written


async def _flush(session: Any, insert: Any, batch: list[dict[str, Any]]) -> int:
    statement = insert(candles).values(batch)
    statement = statement.on_conflict_do_update(
        index_elements=["exchange", "symbol", "timeframe", "time"],
        set_={name: statement.excluded[name] for name in ("open", "high", "low", "close", "volume")},
    )
    await session.execute(statement)
    return len(batch)


async def load(
    kernel: Kernel,
    exchange: str,
    symbol: str,
    timeframe: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
) -> list[Candle]:
    """Stored candles of a series in time order (the last ``limit`` when given)."""
    query = sa.select(candles.c.time, candles.c.open, candles.c.high, candles.c.low, candles.c.close, candles.c.volume).where(
        candles.c.exchange == exchange, candles.c.symbol == symbol, candles.c.timeframe == timeframe
    )
    if start is not None:
        query = query.where(candles.c.time >= start)
    if end is not None:
        query = query.where(candles.c.time <= end)
    query = query.order_by(candles.c.time.desc()).limit(limit) if limit is not None else query.order_by(candles.c.time)
    async with kernel.database().session(system=True) as session:
        rows = (await session.execute(query)).all()
    found = [Candle(*row) for row in rows]
    return sorted(found, key=lambda c: c.time) if limit is not None else found


async def last_price(kernel: Kernel, exchange: str, symbol: str, *, session: Any = None) -> tuple[float, datetime] | None:
    """The close of the newest stored candle of ``symbol`` on ``exchange``, any timeframe (in ``session`` when given)."""
    query = (
        sa.select(candles.c.close, candles.c.time)
        .where(candles.c.exchange == exchange, candles.c.symbol == symbol)
        .order_by(candles.c.time.desc())
        .limit(1)
    )
    if session is not None:
        row = (await session.execute(query)).first()
    else:
        async with kernel.database().session(system=True) as own:
            row = (await own.execute(query)).first()
    return (float(row[0]), row[1]) if row is not None else None


async def extremes_since(kernel: Kernel, exchange: str, symbol: str, since: datetime) -> tuple[float, float] | None:
    """The lowest low and highest high of candles that closed after ``since`` (what a resting order could have met)."""
    query = sa.select(sa.func.min(candles.c.low), sa.func.max(candles.c.high)).where(
        candles.c.exchange == exchange, candles.c.symbol == symbol, candles.c.time >= since
    )
    async with kernel.database().session(system=True) as session:
        low, high = (await session.execute(query)).one()
    return None if low is None else (float(low), float(high))


async def symbols(kernel: Kernel, exchange: str) -> list[dict[str, Any]]:
    """The series stored for ``exchange``: symbol, timeframe, count, first and last time."""
    query = (
        sa.select(candles.c.symbol, candles.c.timeframe, sa.func.count(), sa.func.min(candles.c.time), sa.func.max(candles.c.time))
        .where(candles.c.exchange == exchange)
        .group_by(candles.c.symbol, candles.c.timeframe)
        .order_by(candles.c.symbol)
    )
    async with kernel.database().session(system=True) as session:
        rows = (await session.execute(query)).all()
    return [{"symbol": s, "timeframe": t, "count": n, "first": a, "last": b} for s, t, n, a, b in rows]


def ccxt_rows(raw: Iterable[Sequence[Any]]) -> list[Candle]:
    """ccxt's ``[ms, open, high, low, close, volume]`` rows as candles."""
    return [Candle(datetime.fromtimestamp(row[0] / 1000, UTC), *(float(v or 0) for v in row[1:6])) for row in raw]


SAMPLES = {"BTCUSD": ("BTC/USD", "1M"), "EURUSD": ("EUR/USD", "1h"), "GOOG": ("GOOG", "1d")}


def sample_candles(name: str) -> tuple[str, str, list[Candle]]:
    """Real historical candles shipped by the ``backtesting`` package: ``(symbol, timeframe, candles)``."""
    if name not in SAMPLES:
        raise ProblemError(
            422, "Unknown sample", f"Samples: {', '.join(SAMPLES)}.", errors=[{"field": "sample", "message": "unknown sample"}]
        )
    try:
        from backtesting import test as samples
    except ImportError:
        raise ProblemError(
            503, "Samples unavailable", "Install botcriptofy-exchanges[samples] (the backtesting package) for sample data."
        ) from None
    frame = getattr(samples, name)
    symbol, timeframe = SAMPLES[name]
    out = [
        Candle(stamp.to_pydatetime().replace(tzinfo=UTC), float(o), float(h), float(lo), float(c), float(v))
        for stamp, o, h, lo, c, v in zip(
            frame.index, frame["Open"], frame["High"], frame["Low"], frame["Close"], frame["Volume"], strict=True
        )
    ]
    return symbol, timeframe, out
