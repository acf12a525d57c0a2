"""The ZhianTec ZFM serial protocol (ZFM-20, R30x, R50x, AS608): packet framing and image packing.

A packet is ``EF 01 | address (4) | type (1) | length (2) | payload | checksum (2)``, big-endian, where
``length`` counts the payload plus the checksum and the checksum is the 16-bit sum of the type, the two
length bytes and the payload. The sensor's image is 256x288 pixels, 4-bit grey, two pixels a byte
(the left pixel in the high nibble), uploaded row by row in data packets of the configured packet size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

START_CODE = 0xEF01
DEFAULT_ADDRESS = 0xFFFFFFFF

COMMAND_PACKET = 0x01
DATA_PACKET = 0x02
ACK_PACKET = 0x07
END_DATA_PACKET = 0x08

# Instruction codes (the first payload byte of a command packet).
GEN_IMG = 0x01  # pyfingerprint: readImage
IMG_2_TZ = 0x02  # convertImage
UP_IMAGE = 0x0A  # pyfingerprint: downloadImage (upload to the host)
SET_SYS_PARA = 0x0E
READ_SYS_PARA = 0x0F  # getSystemParameters
SET_PWD = 0x12
VFY_PWD = 0x13
GET_RANDOM_CODE = 0x14
TEMPLATE_NUM = 0x1D
READ_CON_LIST = 0x1F

# Confirmation codes (the first payload byte of an acknowledgement).
OK = 0x00
ERROR_COMMUNICATION = 0x01
ERROR_NO_FINGER = 0x02
ERROR_READ_IMAGE = 0x03
ERROR_UPLOAD_IMAGE = 0x0F
ERROR_WRONG_PASSWORD = 0x13
ERROR_INVALID_REGISTER = 0x1A
ERROR_MUST_VERIFY_PASSWORD = 0x21

IMAGE_WIDTH = 256
IMAGE_HEIGHT = 288
IMAGE_BYTES = IMAGE_WIDTH * IMAGE_HEIGHT // 2

PACKET_SIZES = (32, 64, 128, 256)  # by the "data package length" parameter N = 0..3


@dataclass(frozen=True)
class Packet:
    """One decoded packet."""

    address: int
    kind: int
    payload: bytes


def checksum(kind: int, payload: bytes) -> int:
    """The 16-bit checksum of a packet of ``kind`` carrying ``payload``."""
    length = len(payload) + 2
    return (kind + (length >> 8) + (length & 0xFF) + sum(payload)) & 0xFFFF


def encode_packet(address: int, kind: int, payload: bytes, *, corrupt: bool = False) -> bytes:
    """Frame ``payload``; ``corrupt`` flips the checksum (a line fault, for the emulator)."""
    length = len(payload) + 2
    check = checksum(kind, payload) ^ (0xFFFF if corrupt else 0)
    return (
        START_CODE.to_bytes(2, "big")
        + address.to_bytes(4, "big")
        + bytes([kind])
        + length.to_bytes(2, "big")
        + payload
        + check.to_bytes(2, "big")
    )


class PacketDecoder:
    """Incremental decoder: feed bytes as they arrive, take whole packets out.

    Bytes before a start code are skipped (line noise); a packet whose checksum is wrong is
    dropped, as the sensor does.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[Packet]:
        """Append ``data``; return the packets it completes."""
        self._buffer.extend(data)
        packets: list[Packet] = []
        while True:
            start = self._buffer.find(START_CODE.to_bytes(2, "big"))
            if start < 0:
                del self._buffer[:-1]
                return packets
            del self._buffer[:start]
            if len(self._buffer) < 9:
                return packets
            length = int.from_bytes(self._buffer[7:9], "big")
            if length < 2:
                del self._buffer[:2]
                self.dropped += 1
                continue
            if len(self._buffer) < 9 + length:
                return packets
            frame = bytes(self._buffer[: 9 + length])
            del self._buffer[: 9 + length]
            kind, payload = frame[6], frame[9:-2]
            if int.from_bytes(frame[-2:], "big") != checksum(kind, payload):
                self.dropped += 1
                continue
            packets.append(Packet(int.from_bytes(frame[2:6], "big"), kind, payload))


def pack_4bit(image: np.ndarray) -> bytes:
    """Pack a 288x256 grey uint8 image as the sensor uploads it: high nibbles, two pixels a byte."""
    if image.shape != (IMAGE_HEIGHT, IMAGE_WIDTH) or image.dtype != np.uint8:
        raise ValueError(f"a sensor image is uint8 {IMAGE_HEIGHT}x{IMAGE_WIDTH}, not {image.shape}")
    nibbles = image >> 4
    return (nibbles[:, 0::2] << 4 | nibbles[:, 1::2]).astype(np.uint8).tobytes()


def unpack_4bit(data: bytes) -> np.ndarray:
    """Inverse of :func:`pack_4bit`, scaling each nibble by 17 (0..15 -> 0..255) as pyfingerprint does."""
    if len(data) != IMAGE_BYTES:
        raise ValueError(f"a sensor image is {IMAGE_BYTES} bytes, got {len(data)}")
    packed = np.frombuffer(data, dtype=np.uint8).reshape(IMAGE_HEIGHT, IMAGE_WIDTH // 2)
    image = np.empty((IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8)
    image[:, 0::2] = (packed >> 4) * 17
    image[:, 1::2] = (packed & 0x0F) * 17
    return image


def quantize_4bit(image: np.ndarray) -> np.ndarray:
    """The image as the host receives it after the sensor's 4-bit packing."""
    return ((image >> 4) * 17).astype(np.uint8)
