"""One worker process for the multi-worker test: every installed plugin the settings enable, until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from botcriptofy import Runtime


async def main(settings_dir: str) -> None:
    runtime = Runtime(settings_dir, env="testing", discover=True, watch=False)
    await runtime.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
