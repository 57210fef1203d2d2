"""The Feetech STS3215 control table, kept as data (protocol 0, little-endian words).

Shared by the bus layer, the emulator and the calibration code. Addresses and encodings follow
Feetech's STS3215 memory table (as used by LeRobot's SO-101 driver).
"""
from __future__ import annotations

from dataclasses import dataclass

MODEL_STS3215 = 777
TICKS_PER_TURN = 4096
HALF_TURN_TICKS = 2047
MAX_TICK = TICKS_PER_TURN - 1
BROADCAST_ID = 0xFE

# Instructions (protocol 0).
PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x82, 0x83

# Error bits of a status packet's ERROR byte (scservo_sdk ERRBIT_*).
ERR_VOLTAGE, ERR_ANGLE, ERR_OVERHEAT, ERR_OVERCURRENT, ERR_OVERLOAD = 0x01, 0x02, 0x04, 0x08, 0x20
ERROR_NAMES = {ERR_VOLTAGE: "voltage", ERR_ANGLE: "angle sensor", ERR_OVERHEAT: "over-temperature",
               ERR_OVERCURRENT: "over-current", ERR_OVERLOAD: "overload"}
# Bits of the Status register (65) that must take the joint's torque off.
SHUTDOWN_ERRORS = ERR_OVERHEAT | ERR_OVERLOAD | ERR_OVERCURRENT


def describe_errors(bits: int) -> str:
    names = [name for bit, name in ERROR_NAMES.items() if bits & bit]
    return ", ".join(names) if names else "none"


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int  # bytes: 1 or 2
    eeprom: bool = False  # writes need Lock = 0 and persist
    sign_bit: int | None = None  # sign-magnitude encoding: the bit carrying the sign
    read_only: bool = False
    default: int = 0  # value of a factory-fresh servo (the emulator's power-on state)


_REGISTERS = [
    # --- EEPROM
    Register("Firmware_Major_Version", 0, 1, eeprom=True, read_only=True, default=3),
    Register("Firmware_Minor_Version", 1, 1, eeprom=True, read_only=True, default=10),
    Register("Model_Number", 3, 2, eeprom=True, read_only=True, default=MODEL_STS3215),
    Register("ID", 5, 1, eeprom=True, default=1),
    Register("Baud_Rate", 6, 1, eeprom=True, default=0),  # 0 = 1,000,000 baud
    Register("Return_Delay_Time", 7, 1, eeprom=True, default=0),
    Register("Response_Status_Level", 8, 1, eeprom=True, default=1),
    Register("Min_Position_Limit", 9, 2, eeprom=True, default=0),
    Register("Max_Position_Limit", 11, 2, eeprom=True, default=MAX_TICK),
    Register("Max_Temperature_Limit", 13, 1, eeprom=True, default=70),
    Register("Max_Voltage_Limit", 14, 1, eeprom=True, default=140),
    Register("Min_Voltage_Limit", 15, 1, eeprom=True, default=40),
    Register("Max_Torque_Limit", 16, 2, eeprom=True, default=1000),
    Register("Phase", 18, 1, eeprom=True, default=12),
    Register("Unloading_Condition", 19, 1, eeprom=True, default=44),
    Register("LED_Alarm_Condition", 20, 1, eeprom=True, default=47),
    Register("P_Coefficient", 21, 1, eeprom=True, default=32),
    Register("D_Coefficient", 22, 1, eeprom=True, default=32),
    Register("I_Coefficient", 23, 1, eeprom=True, default=0),
    Register("Minimum_Startup_Force", 24, 2, eeprom=True, default=16),
    Register("CW_Dead_Zone", 26, 1, eeprom=True, default=1),
    Register("CCW_Dead_Zone", 27, 1, eeprom=True, default=1),
    Register("Protection_Current", 28, 2, eeprom=True, default=500),
    Register("Angular_Resolution", 30, 1, eeprom=True, default=1),
    Register("Homing_Offset", 31, 2, eeprom=True, sign_bit=11, default=0),
    Register("Operating_Mode", 33, 1, eeprom=True, default=0),  # 0 = position servo
    Register("Protective_Torque", 34, 1, eeprom=True, default=20),
    Register("Protection_Time", 35, 1, eeprom=True, default=200),
    Register("Overload_Torque", 36, 1, eeprom=True, default=80),
    # --- SRAM
    Register("Torque_Enable", 40, 1, default=0),
    Register("Acceleration", 41, 1, default=0),  # x100 ticks/s^2; 0 = the servo's maximum
    Register("Goal_Position", 42, 2, sign_bit=15, default=HALF_TURN_TICKS),
    Register("Goal_Time", 44, 2, default=0),
    Register("Goal_Velocity", 46, 2, sign_bit=15, default=0),  # ticks/s; 0 = the servo's maximum
    Register("Torque_Limit", 48, 2, default=1000),
    Register("Lock", 55, 1, default=1),
    Register("Present_Position", 56, 2, sign_bit=15, read_only=True),
    Register("Present_Velocity", 58, 2, sign_bit=15, read_only=True),
    Register("Present_Load", 60, 2, sign_bit=10, read_only=True),
    Register("Present_Voltage", 62, 1, read_only=True, default=121),  # 0.1 V
    Register("Present_Temperature", 63, 1, read_only=True, default=32),  # deg C
    Register("Status", 65, 1, read_only=True),
    Register("Moving", 66, 1, read_only=True),
    Register("Present_Current", 69, 2, read_only=True),
]

REGISTERS: dict[str, Register] = {r.name: r for r in _REGISTERS}
MEMORY_SIZE = 128


def encode_value(register: Register, value: int) -> int:
    """Signed value -> the raw unsigned register content (sign-magnitude where the register uses it)."""
    if register.sign_bit is not None:
        magnitude = abs(int(value))
        if magnitude >= 1 << register.sign_bit:
            raise ValueError(f"{register.name}: |{value}| does not fit below sign bit {register.sign_bit}")
        return magnitude | (1 << register.sign_bit) if value < 0 else magnitude
    if not 0 <= value < 1 << (8 * register.size):
        raise ValueError(f"{register.name}: {value} does not fit in {register.size} byte(s)")
    return int(value)


def decode_value(register: Register, raw: int) -> int:
    if register.sign_bit is not None and raw & (1 << register.sign_bit):
        return -(raw & ((1 << register.sign_bit) - 1))
    return int(raw)


def to_bytes(register: Register, raw: int) -> bytes:
    return int(raw).to_bytes(register.size, "little")


def from_bytes(register: Register, data: bytes | list[int]) -> int:
    return int.from_bytes(bytes(data[: register.size]), "little")


def checksum(body: bytes | list[int]) -> int:
    """Protocol-0 checksum over ID, LENGTH, INSTRUCTION/ERROR and parameters."""
    return (~sum(body)) & 0xFF
