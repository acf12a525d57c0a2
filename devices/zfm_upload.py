"""The host's side of a ZFM image upload (UpImage), read off the serial port into memory only.

pyfingerprint's ``downloadImage`` can only write the image to a file, and a raw fingerprint is never stored
(README, "Personal data"): the driver sends UpImage itself and reads the acknowledgement and the data packets
with :class:`~devices.zfm_protocol.PacketDecoder`, unpacking the 4-bit pixels in memory
(:func:`~devices.zfm_protocol.unpack_4bit`, as pyfingerprint scales them).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np

from devices import zfm_protocol as zfm


class SerialPort(Protocol):
    """What the upload needs of a serial port (pyserial's ``Serial``): ``read`` blocks for its timeout at most."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...


class CorruptUpload(Exception):
    """The upload's bytes were damaged: a wrong checksum, a packet of the wrong kind, an image of the wrong size.
    The message says what the sensor sent ("a bad packet ...", "an incomplete image ...")."""


class UploadRefused(Exception):
    """The sensor answered UpImage with an error code (no image in its buffer, or it could not send it)."""


class _PacketReader:
    """Whole packets from ``port``, in order; a packet dropped for its checksum is :class:`CorruptUpload`."""

    def __init__(self, port: SerialPort) -> None:
        self._port = port
        self._decoder = zfm.PacketDecoder()
        self._ready: deque[zfm.Packet] = deque()

    def next(self) -> zfm.Packet:
        while not self._ready:
            chunk = self._port.read(max(1, self._port.in_waiting))  # the first byte waits for the port's timeout
            self._ready.extend(self._decoder.feed(chunk))
            if self._decoder.dropped:
                raise CorruptUpload("a bad packet (the checksum is wrong)")
        return self._ready.popleft()


def upload_image(port: SerialPort, address: int = zfm.DEFAULT_ADDRESS) -> np.ndarray:
    """Ask the sensor at ``address`` on ``port`` for its image buffer (UpImage) and return it: grey uint8, 288 rows
    x 256 columns, each 4-bit pixel scaled by 17. Nothing is written to a file.

    Raises :class:`UploadRefused` for an error code, :class:`CorruptUpload` for damaged or missing data; the
    port's own errors (a timeout, a closed port) pass through.
    """
    port.write(zfm.encode_packet(address, zfm.COMMAND_PACKET, bytes([zfm.UP_IMAGE])))
    packets = _PacketReader(port)
    ack = packets.next()
    if ack.kind != zfm.ACK_PACKET or not ack.payload:
        raise CorruptUpload("a bad packet (no acknowledgement of the upload)")
    if ack.payload[0] != zfm.OK:
        raise UploadRefused(f"confirmation code 0x{ack.payload[0]:02X}")
    data = bytearray()
    while True:
        packet = packets.next()
        if packet.kind not in (zfm.DATA_PACKET, zfm.END_DATA_PACKET):
            raise CorruptUpload(f"a bad packet (kind 0x{packet.kind:02X} inside the image's data)")
        data += packet.payload
        if len(data) > zfm.IMAGE_BYTES:
            raise CorruptUpload(f"a bad image (more than {zfm.IMAGE_BYTES} bytes)")
        if packet.kind == zfm.END_DATA_PACKET:
            break
    if len(data) != zfm.IMAGE_BYTES:
        raise CorruptUpload(f"an incomplete image ({len(data)} of {zfm.IMAGE_BYTES} bytes)")
    return zfm.unpack_4bit(bytes(data))
