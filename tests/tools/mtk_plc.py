"""A PLC that polls the station (station as Modbus server), written with modbus-tk (not the station's stack).

    python tests/tools/mtk_plc.py PORT SECONDS TRIGGER_PERIOD_MS LOG.jsonl

Every cycle (2 ms) it reads the station's discrete inputs (reject, result-ready) and input registers
(result block, heartbeat, state, reject request); on result-ready it logs the result and writes the
ack coil; every TRIGGER_PERIOD_MS it writes the trigger coil and logs the time it did.
"""

import json
import sys
import time

import modbus_tk.defines as cst
from modbus_tk import modbus_tcp

UNIT, ACK, TRIGGER = 255, 2, 4


def main() -> None:
    port, seconds, period, path = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]) / 1e3, sys.argv[4]
    master = modbus_tcp.TcpMaster(host="127.0.0.1", port=port, timeout_in_sec=1.0)
    end, next_trigger, ready_before = time.monotonic() + seconds, time.monotonic() + period, False
    heartbeat = None
    with open(path, "w") as out:
        def log(**e):
            out.write(json.dumps({"t_ns": time.monotonic_ns(), **e}) + "\n")

        while time.monotonic() < end:
            di = master.execute(UNIT, cst.READ_DISCRETE_INPUTS, 0, 4)
            ir = master.execute(UNIT, cst.READ_INPUT_REGISTERS, 0, 8)
            if di[1] and not ready_before:
                log(kind="result", seq16=ir[0], verdict=ir[1], seq32=(ir[2] << 16) | ir[3], reject_cmd=list(ir[6:8]))
                master.execute(UNIT, cst.WRITE_SINGLE_COIL, ACK, output_value=1)
            ready_before = bool(di[1])
            if ir[4] != heartbeat:
                heartbeat = ir[4]
                log(kind="heartbeat", value=heartbeat, state=ir[5], reject=di[0])
            if time.monotonic() >= next_trigger:
                before = time.monotonic_ns()
                master.execute(UNIT, cst.WRITE_SINGLE_COIL, TRIGGER, output_value=1)
                log(kind="trigger", before=before)  # t_ns: the reply is back
                next_trigger += period
            time.sleep(0.002)
    master.close()


if __name__ == "__main__":
    main()
