"""A ZhianTec ZFM fingerprint sensor emulated on a pseudo-terminal, for tests and demonstrations.

The emulator answers the ZFM serial protocol (see :mod:`devices.zfm_protocol`) on the master side of a
pty; a driver opens the slave side as it would open ``/dev/ttyUSB0``, so the unmodified ``pyfingerprint``
package talks to it byte for byte. The port it offers is a stable symlink to the slave (``port``), so
that an emulated unplug removes the port and a replug brings it back under the same name, as a USB
serial adapter does.

It serves real fingerprint images from a folder (PNG or TIFF, any size), each file one placement of a
finger, in turn, resampled to the sensor's 256x288 window at 500 dpi and uploaded 4-bit as the real sensor
does. As on a real sensor, a finger stays on the platen until it is lifted: every image capture (GenImg) while
it is down answers OK with the same finger, for ``hold_polls`` captures (or until :meth:`ZfmEmulator.lift`);
then the finger is off and GenImg answers "no finger" for ``lift_polls`` polls before the next file's finger is
placed. Faults can be injected: no finger on the sensor, a silent sensor, corrupt checksums, a refused password,
and an unplugged cable.

Commands answered: VfyPwd, SetPwd, ReadSysPara, SetSysPara, GenImg, UpImage, TempleteNum, ReadConList,
GetRandomCode. Any other instruction is answered with confirmation code 0x01.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import secrets
import select
import shutil
import tempfile
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from devices import zfm_protocol as zfm
from devices.sensor_image import SENSOR_DPI, fit_to_sensor, list_images, load_grey

log = logging.getLogger(__name__)

_SELECT_S = 0.05
_WRITE_STALL_S = 2.0


class Fault(enum.Enum):
    """Faults the emulator can be told to show."""

    NO_FINGER = "no_finger"  # GenImg answers "no finger" (nobody touches the sensor)
    SILENT = "silent"  # commands are read and never answered
    BAD_CHECKSUM = "bad_checksum"  # every packet sent carries a wrong checksum
    WRONG_PASSWORD = "wrong_password"  # VfyPwd is refused whatever the password
    UNPLUGGED = "unplugged"  # the pty is closed and the port disappears


class ZfmEmulator:
    """A ZFM-20-family sensor on a pty, serving ``images`` (a folder or a list of files) in turn.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        images: Path | str | Sequence[Path | str],
        *,
        address: int = zfm.DEFAULT_ADDRESS,
        password: int = 0x00000000,
        packet_size: int = 128,
        baud_rate: int = 57600,
        security_level: int = 3,
        storage_capacity: int = 1000,
        system_id: int = 0x0000,
        source_dpi: float | None = None,
        hold_polls: int = 1,
        lift_polls: int = 1,
    ) -> None:
        if isinstance(images, str | Path):
            folder = Path(images)
            if not folder.is_dir():
                raise FileNotFoundError(f"fingerprint image folder not found: {folder}")
            self.images = list_images(folder)
        else:
            self.images = [Path(p) for p in images]
        if not self.images:
            raise ValueError(f"no PNG or TIFF fingerprint images to serve in {images}")
        if packet_size not in zfm.PACKET_SIZES:
            raise ValueError(f"packet size must be one of {zfm.PACKET_SIZES}, got {packet_size}")
        if baud_rate % 9600 or not 1 <= baud_rate // 9600 <= 12:
            raise ValueError(f"baud rate must be a multiple of 9600 up to 115200, got {baud_rate}")
        if hold_polls < 1 or lift_polls < 1:
            raise ValueError(f"a finger is held for 1 or more image captures and lifted for 1 or more polls, got "
                             f"hold_polls={hold_polls}, lift_polls={lift_polls}")
        self.address = address
        self.password = password
        self.packet_size = packet_size
        self.baud_rate = baud_rate
        self.security_level = security_level
        self.storage_capacity = storage_capacity
        self.system_id = system_id
        self.source_dpi = source_dpi
        self.hold_polls = hold_polls  # image captures (GenImg) a placed finger stays on the sensor for
        self.lift_polls = lift_polls  # GenImg polls answered "no finger" after a lift, before the next finger
        self.faults: set[Fault] = set()
        self.served: list[Path] = []  # the file behind each successful GenImg, in order
        self.placements: list[Path] = []  # the file of each finger put on the sensor, in order
        self.gen_img_answers: list[int] = []  # the confirmation code of each GenImg, in order
        self.commands: list[int] = []  # instruction codes received, in order
        self._next = 0
        self._placed: deque[Path] = deque()
        self._finger: Path | None = None  # the finger on the sensor now
        self._held_left = 0  # image captures before the finger on the sensor is lifted
        self._lifted_left = 0  # "no finger" polls before the next finger is placed
        self._image_buffer: np.ndarray | None = None
        self._verified = password == 0
        self._decoder = zfm.PacketDecoder()
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="zfm-emulator-"))
        self.port = str(self._dir / "ttyZFM0")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ZfmEmulator:
        """Plug the sensor in (open the pty, create the port) and start answering."""
        with self._lock:
            self._plug()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="zfm-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering, close the pty and remove the port. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._unplug()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ZfmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Start showing ``fault``."""
        with self._lock:
            self.faults.add(fault)
            if fault is Fault.UNPLUGGED:
                self._unplug()
            elif fault is Fault.NO_FINGER:
                self.lift()

    def clear(self, fault: Fault | None = None) -> None:
        """Stop showing ``fault`` (all faults when None); clearing UNPLUGGED plugs the sensor back in."""
        with self._lock:
            cleared = set(self.faults) if fault is None else {fault} & self.faults
            self.faults -= cleared
            if Fault.UNPLUGGED in cleared and not self._stop.is_set():
                self._plug()

    @property
    def plugged(self) -> bool:
        """Whether the pty is open and the port exists."""
        return self._master is not None

    # -- images --------------------------------------------------------------------------------

    def place(self, path: Path | str) -> None:
        """Put this finger on the sensor next: the next placement is ``path`` (held as any placement), then the
        folder's turn resumes. A finger on the sensor now stays until it is lifted."""
        with self._lock:
            self._placed.append(Path(path))

    def lift(self) -> None:
        """Lift the finger on the sensor now (no-op when none is): GenImg answers "no finger" for
        ``lift_polls`` polls, then the next finger is placed."""
        with self._lock:
            if self._finger is not None:
                self._finger, self._held_left, self._lifted_left = None, 0, self.lift_polls

    @property
    def finger_on_sensor(self) -> Path | None:
        """The file of the finger on the sensor now, or None."""
        return self._finger

    def sensor_image(self, path: Path | str) -> np.ndarray:
        """``path`` as the sensor sees it: 288x256 uint8 at 500 dpi, before the 4-bit upload."""
        grey, dpi = load_grey(Path(path))
        return fit_to_sensor(grey, self.source_dpi or dpi or SENSOR_DPI)

    # -- pty -----------------------------------------------------------------------------------

    def _plug(self) -> None:
        if self._master is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._decoder = zfm.PacketDecoder()
        self._verified = self.password == 0
        self._image_buffer = None
        link = Path(self.port)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(slave))
        log.info("ZFM emulator plugged in on %s -> %s", self.port, os.ttyname(slave))

    def _unplug(self) -> None:
        Path(self.port).unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master = self._master
                if master is not None:
                    readable, _, _ = select.select([master], [], [], _SELECT_S)
                    if readable:
                        try:
                            data = os.read(master, 4096)
                        except (BlockingIOError, InterruptedError):
                            data = b""
                        except OSError:  # the other side went away; keep the sensor plugged in
                            data = b""
                        for packet in self._decoder.feed(data):
                            self._handle(packet)
            if master is None:
                time.sleep(_SELECT_S)

    def _send(self, kind: int, payload: bytes) -> bool:
        """Send one packet; False when the host stopped reading (its stale input is then flushed)."""
        assert self._master is not None and self._slave is not None
        frame = zfm.encode_packet(self.address, kind, payload, corrupt=Fault.BAD_CHECKSUM in self.faults)
        view = memoryview(frame)
        deadline = time.monotonic() + _WRITE_STALL_S
        while view:
            _, writable, _ = select.select([], [self._master], [], _SELECT_S)
            if writable:
                with contextlib.suppress(BlockingIOError):
                    view = view[os.write(self._master, view) :]
                continue
            if self._stop.is_set() or time.monotonic() > deadline:
                termios.tcflush(self._slave, termios.TCIFLUSH)
                return False
        return True

    def _ack(self, code: int, data: bytes = b"") -> bool:
        return self._send(zfm.ACK_PACKET, bytes([code]) + data)

    # -- commands ------------------------------------------------------------------------------

    def _handle(self, packet: zfm.Packet) -> None:
        if packet.kind != zfm.COMMAND_PACKET or not packet.payload or packet.address != self.address:
            return  # a real sensor ignores packets for another address
        instruction, args = packet.payload[0], packet.payload[1:]
        self.commands.append(instruction)
        if Fault.SILENT in self.faults:
            return
        if instruction == zfm.VFY_PWD:
            self._verify_password(args)
        elif not self._verified:
            self._ack(zfm.ERROR_MUST_VERIFY_PASSWORD)
        elif instruction == zfm.READ_SYS_PARA:
            self._ack(zfm.OK, self._system_parameters())
        elif instruction == zfm.SET_SYS_PARA:
            self._set_system_parameter(args)
        elif instruction == zfm.SET_PWD and len(args) == 4:
            self.password = int.from_bytes(args, "big")
            self._ack(zfm.OK)
        elif instruction == zfm.GEN_IMG:
            self._gen_img()
        elif instruction == zfm.UP_IMAGE:
            self._up_image()
        elif instruction == zfm.TEMPLATE_NUM:
            self._ack(zfm.OK, (0).to_bytes(2, "big"))
        elif instruction == zfm.READ_CON_LIST:
            self._ack(zfm.OK, bytes(32))
        elif instruction == zfm.GET_RANDOM_CODE:
            self._ack(zfm.OK, secrets.token_bytes(4))
        else:
            self._ack(zfm.ERROR_COMMUNICATION)

    def _verify_password(self, args: bytes) -> None:
        if len(args) != 4:
            self._ack(zfm.ERROR_COMMUNICATION)
        elif Fault.WRONG_PASSWORD in self.faults or int.from_bytes(args, "big") != self.password:
            self._ack(zfm.ERROR_WRONG_PASSWORD)
        else:
            self._verified = True
            self._ack(zfm.OK)

    def _system_parameters(self) -> bytes:
        status = (0b100 if self._verified else 0) | (0b1000 if self._image_buffer is not None else 0)
        fields = (
            status.to_bytes(2, "big"),
            self.system_id.to_bytes(2, "big"),
            self.storage_capacity.to_bytes(2, "big"),
            self.security_level.to_bytes(2, "big"),
            self.address.to_bytes(4, "big"),
            zfm.PACKET_SIZES.index(self.packet_size).to_bytes(2, "big"),
            (self.baud_rate // 9600).to_bytes(2, "big"),
        )
        return b"".join(fields)

    def _set_system_parameter(self, args: bytes) -> None:
        if len(args) != 2:
            self._ack(zfm.ERROR_COMMUNICATION)
            return
        number, value = args
        if number == 4 and 1 <= value <= 12:
            self._ack(zfm.OK)  # acknowledged at the old rate, as the sensor does
            self.baud_rate = value * 9600
        elif number == 5 and 1 <= value <= 5:
            self.security_level = value
            self._ack(zfm.OK)
        elif number == 6 and 0 <= value <= 3:
            self.packet_size = zfm.PACKET_SIZES[value]
            self._ack(zfm.OK)
        else:
            self._ack(zfm.ERROR_INVALID_REGISTER)

    def _next_finger(self) -> Path | None:
        """The finger on the sensor at this GenImg: the one held, or a new placement once the lift is over;
        None while nobody touches the sensor."""
        if Fault.NO_FINGER in self.faults:
            return None
        if self._finger is None:
            if self._lifted_left > 0:
                self._lifted_left -= 1
                return None
            if self._placed:
                self._finger = self._placed.popleft()
            else:
                self._finger = self.images[self._next % len(self.images)]
                self._next += 1
            self._held_left = self.hold_polls
            self.placements.append(self._finger)
        path = self._finger
        self._held_left -= 1
        if self._held_left <= 0:  # this is the last image of the placement: the finger is lifted after it
            self._finger, self._lifted_left = None, self.lift_polls
        return path

    def _gen_img(self) -> None:
        path = self._next_finger()
        if path is None:
            self._answer_gen_img(zfm.ERROR_NO_FINGER)
            return
        try:
            self._image_buffer = self.sensor_image(path)
        except (OSError, ValueError) as exc:
            log.warning("ZFM emulator cannot read %s: %s", path, exc)
            self._image_buffer = None
            self._answer_gen_img(zfm.ERROR_READ_IMAGE)
            return
        self.served.append(path)
        self._answer_gen_img(zfm.OK)

    def _answer_gen_img(self, code: int) -> None:
        self.gen_img_answers.append(code)
        self._ack(code)

    def _up_image(self) -> None:
        if self._image_buffer is None:
            self._ack(zfm.ERROR_UPLOAD_IMAGE)
            return
        if not self._ack(zfm.OK):
            return
        data = zfm.pack_4bit(self._image_buffer)
        size = self.packet_size
        for offset in range(0, len(data), size):
            last = offset + size >= len(data)
            kind = zfm.END_DATA_PACKET if last else zfm.DATA_PACKET
            if not self._send(kind, data[offset : offset + size]):
                return


_HELP = (
    "commands: no_finger | silent | bad_checksum | wrong_password | unplugged  (inject a fault);\n"
    "          clear [FAULT]  |  place FILE  |  lift  |  status  |  quit"
)


def _command(emulator: ZfmEmulator, line: str) -> bool:
    """Apply one console command; False to quit."""
    words = line.split()
    if not words:
        return True
    verb, rest = words[0].lower(), words[1:]
    faults = {f.value: f for f in Fault}
    if verb == "quit":
        return False
    if verb in faults:
        emulator.inject(faults[verb])
    elif verb == "clear":
        emulator.clear(faults[rest[0]] if rest and rest[0] in faults else None)
    elif verb == "place" and rest:
        emulator.place(" ".join(rest))
    elif verb == "lift":
        emulator.lift()
    elif verb != "status":
        print(_HELP, flush=True)
        return True
    shown = ", ".join(sorted(f.value for f in emulator.faults)) or "none"
    finger = emulator.finger_on_sensor
    print(f"faults: {shown}; finger on the sensor: {finger.name if finger else 'none'}; served "
          f"{len(emulator.served)} image(s); port {emulator.port}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run an emulated sensor until SIGTERM/SIGINT or "quit"; faults are typed on standard input."""
    import argparse
    import signal
    import sys

    p = argparse.ArgumentParser(prog="python -m devices.zfm_emulator", description=main.__doc__)
    p.add_argument("images", type=Path, help="folder of PNG/TIFF fingerprint images, served in turn")
    p.add_argument("--address", type=lambda v: int(v, 0), default=zfm.DEFAULT_ADDRESS)
    p.add_argument("--password", type=lambda v: int(v, 0), default=0)
    p.add_argument("--packet-size", type=int, choices=zfm.PACKET_SIZES, default=128)
    p.add_argument("--dpi", type=float, help="resolution of the images when their files do not record it")
    p.add_argument("--hold-polls", type=int, default=1, metavar="N",
                   help="image captures each finger stays on the sensor for, unless lifted (default 1)")
    p.add_argument("--lift-polls", type=int, default=1, metavar="N",
                   help="polls answered 'no finger' after a lift, before the next finger (default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emulator = ZfmEmulator(args.images, address=args.address, password=args.password,
                           packet_size=args.packet_size, source_dpi=args.dpi, hold_polls=args.hold_polls,
                           lift_polls=args.lift_polls).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"ZFM emulator on {emulator.port} serving {len(emulator.images)} images from {args.images}", flush=True)

    def console() -> None:
        for line in sys.stdin:
            if not _command(emulator, line):
                break
        else:
            return  # end of input (run in the background): keep serving until a signal
        stop.set()

    threading.Thread(target=console, daemon=True).start()
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
