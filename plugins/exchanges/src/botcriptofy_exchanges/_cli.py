"""``botcriptofy marketdata ...``: load the sample candles, import a CSV file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from botcriptofy import Kernel, pass_kernel


def add_commands(cli: click.Group) -> None:
    @cli.group("marketdata")
    def marketdata() -> None:
        """Market data: OHLCV candles."""

    @marketdata.command("load-sample")
    @click.argument("name", type=click.Choice(["BTCUSD", "EURUSD", "GOOG"]))
    @click.option("--exchange", default="sample", show_default=True, help="The source name to store the series under.")
    @pass_kernel
    async def load_sample(kernel: Kernel, name: str, exchange: str) -> None:
        """Store a sample series shipped by the backtesting package (real historical prices)."""
        from . import _candles

        symbol, timeframe, rows = _candles.sample_candles(name)
        written = await _candles.store(kernel, exchange, symbol, timeframe, rows)
        click.echo(f"{exchange} {symbol} {timeframe}: {written} candles")

    @marketdata.command("import")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--exchange", required=True)
    @click.option("--symbol", required=True)
    @click.option("--timeframe", required=True)
    @pass_kernel
    async def import_csv(kernel: Kernel, path: Path, exchange: str, symbol: str, timeframe: str) -> None:
        """Import candles from a CSV file (time,open,high,low,close[,volume])."""
        from . import _candles

        rows = _candles.parse_csv(await asyncio.to_thread(path.read_text))
        written = await _candles.store(kernel, exchange, symbol, timeframe, rows)
        gaps = _candles.find_gaps(sorted(c.time for c in rows), timeframe)
        click.echo(f"{exchange} {symbol} {timeframe}: {written} candles, {len(gaps)} gap(s)")
