"""A PLC built on pyModbusTCP (not the stack the station uses): timestamps writes, acknowledges results.

    python tests/tools/pmt_plc.py PORT EVENTS.jsonl

Prints ``ready`` when it listens. Every coil / holding-register write a client makes is appended to
EVENTS.jsonl with CLOCK_MONOTONIC (comparable with the station's clock). When the station sets the
result-ready coil (1), the PLC sets the ack coil (2), as a PLC program would.
"""

import json
import sys
import threading
import time

from pyModbusTCP.server import DataBank, DataHandler, ModbusServer

READY, ACK = 1, 2


class Handler(DataHandler):
    def __init__(self, out):
        super().__init__(DataBank())
        self.out, self.lock = out, threading.Lock()

    def _log(self, kind, address, values, srv_info):
        with self.lock:
            self.out.write(json.dumps({"t_ns": time.monotonic_ns(), "kind": kind, "address": address,
                                       "values": [int(v) for v in values],
                                       "unit": srv_info.recv_frame.mbap.unit_id}) + "\n")
            self.out.flush()

    def write_coils(self, address, bits_l, srv_info):
        ret = super().write_coils(address, bits_l, srv_info)
        if ret.ok:
            self._log("coil", address, bits_l, srv_info)
            if address <= READY < address + len(bits_l) and bits_l[READY - address]:
                self.data_bank.set_coils(ACK, [True])  # the PLC program acknowledges
        return ret

    def write_h_regs(self, address, words_l, srv_info):
        ret = super().write_h_regs(address, words_l, srv_info)
        if ret.ok:
            self._log("hr", address, words_l, srv_info)
        return ret


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path, "a") as out:
        server = ModbusServer(host="127.0.0.1", port=port, no_block=True, data_hdl=Handler(out))
        server.start()
        print("ready", flush=True)
        try:
            while True:
                time.sleep(1)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
