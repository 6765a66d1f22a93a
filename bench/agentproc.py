"""``python -m bench.agentproc agent …``: exactly ``virtbus agent …``, plus profiling
windows: SIGUSR1 starts pyinstrument, SIGUSR2 stops it and writes the profile to
``$BENCH_PROFILE_OUT-<n>.json`` (see ``bench.profiling``). With
``BENCH_PROFILE_STARTUP=1`` the first window opens before the agent's modules are
imported (to profile start-up). Used only for profile runs;
measured runs start the real ``virtbus`` entry point.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from bench.profiling import Window


def main() -> int:
    window = Window(os.environ["BENCH_PROFILE_OUT"])

    def start(signum: int, frame: FrameType | None) -> None:
        window.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        window.stop()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    if os.environ.get("BENCH_PROFILE_STARTUP") == "1":
        window.start()
    from agent.cli import main as virtbus_main

    return virtbus_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
