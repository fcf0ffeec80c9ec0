"""A Modbus TCP server on its own thread (pymodbus), with a callback on every write a client makes.

Used by the station in ``modbus.mode: server`` (the PLC polls the station) and by the project's
PLC simulator. Values are read and set from any thread; the client's writes are timestamped with
``CLOCK_MONOTONIC`` the moment they arrive, before they are stored.

>>> srv = ModbusServerThread("127.0.0.1", 0, lambda *a: None).start()   # doctest: +SKIP
>>> srv.set(FC_COILS, 0, [True]); srv.get(FC_COILS, 0, 1)             # doctest: +SKIP
[True]
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

FC_COILS, FC_DISCRETE, FC_HOLDING, FC_INPUT = 1, 2, 3, 4
_WRITE_FCS = {5: FC_COILS, 15: FC_COILS, 6: FC_HOLDING, 16: FC_HOLDING, 22: FC_HOLDING, 23: FC_HOLDING}

#: ``on_write(table, address, values, t_ns)`` with table one of FC_COILS / FC_HOLDING
OnWrite = Callable[[int, int, list[int], int], None]


class ModbusServerThread:
    """Coils, discrete inputs, holding and input registers (``size`` each), answering every unit id."""

    def __init__(self, host: str, port: int, on_write: OnWrite, size: int = 64,
                 scan: Callable[[], Awaitable[None]] | None = None, scan_period_s: float = 0.001) -> None:
        self.host, self.port, self.on_write, self.size = host, port, on_write, size
        self.scan, self.scan_period_s = scan, scan_period_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = None
        self.last_request_ns = 0  # when a client last asked anything: tells whether the PLC polls
        self.listeners: list[OnWrite] = []  # more write callbacks (a shared server's other users)
        self._internal = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modbus-server", daemon=True)

    @property
    def alive(self) -> bool:
        """True while the server thread runs."""
        return self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> "ModbusServerThread":
        """Start serving; raise ``ConnectionError`` if the port cannot be bound."""
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise ConnectionError(f"Modbus server on {self.host}:{self.port} did not start: {self._error}")
        return self

    def _device(self):
        from pymodbus.simulator import DataType, SimData, SimDevice

        async def action(fc, start_address, address, count, registers, values):
            # called before the store is updated, for reads too (values None)
            self.last_request_ns = time.monotonic_ns()
            if values is not None and not self._internal and fc in _WRITE_FCS:
                self.on_write(_WRITE_FCS[fc], address, [int(v) for v in values], self.last_request_ns)
            return None

        bits = lambda: [SimData(0, count=self.size, values=False, datatype=DataType.BITS)]  # noqa: E731
        regs = lambda: [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)]  # noqa: E731
        return SimDevice(id=0, simdata=(bits(), bits(), regs(), regs()), action=action)  # id 0: every unit id

    def _run(self) -> None:
        from pymodbus.server import ModbusTcpServer

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

        async def scanner() -> None:
            while True:
                await self.scan()
                await asyncio.sleep(self.scan_period_s)

        async def main() -> None:
            self.server = ModbusTcpServer(self._device(), address=(self.host, self.port))
            await self.server.serve_forever(background=True)
            self._ready.set()
            task = asyncio.create_task(scanner()) if self.scan is not None else None
            try:
                await self.server.serving
            finally:
                if task is not None:
                    task.cancel()

        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - reported by start() when it happens there
            self._error = exc
            self._ready.set()

    def _sync(self, coro, timeout: float = 2.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def aset(self, table: int, address: int, values: list) -> None:
        """:meth:`set` from inside the server's loop (a ``scan``)."""
        self._internal = True
        try:
            await self.server.async_setValues(0, table, address, list(values))
        finally:
            self._internal = False

    async def aget(self, table: int, address: int, count: int = 1) -> list:
        """:meth:`get` from inside the server's loop (a ``scan``)."""
        return list(await self.server.async_getValues(0, table, address, count))

    def set(self, table: int, address: int, values: list) -> None:
        """Set values in a table (FC_COILS, FC_DISCRETE, FC_HOLDING, FC_INPUT) without a write callback."""
        self._sync(self.aset(table, address, values))

    def get(self, table: int, address: int, count: int = 1) -> list:
        """Read values from a table."""
        return self._sync(self.aget(table, address, count))

    def stop(self) -> None:
        """Stop serving and end the thread."""
        if self.loop is not None and self.server is not None and self._thread.is_alive():
            try:
                self._sync(self.server.shutdown(), timeout=5.0)
            except Exception:  # noqa: BLE001 - already stopping
                pass
            self._thread.join(5.0)
