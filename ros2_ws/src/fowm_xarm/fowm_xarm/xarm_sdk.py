"""The narrow boundary between the xArm driver node and xarm-python-sdk.

The driver talks to the arm only through the `XArmAPI` methods and properties listed in
`SDK_METHODS` / `SDK_PROPERTIES`. `make_arm` builds either the real `xarm.wrapper.XArmAPI` or
`RecordedXArm`, a stand-in with the same method signatures (a test asserts they equal the installed
SDK's, so the stand-in cannot drift) that simulates an ideal arm and appends every call to a
JSON-lines log. The recorded backend is what the driver's tests run against; nothing here has been
run against a real controller.

Fault injection (recorded backend only): write a JSON object to `<log>.inject.json`; the next SDK
call applies it once per new file content:
    {"error_code": 22}                    controller error: state becomes 4 (stopped), callbacks fire
    {"warn_code": 11}                     controller warning, callbacks fire
    {"disconnect": true, "refuse_connects": 2}   the link drops; the next 2 connect() calls raise
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xarm.core.config.x_code import ControllerError, ControllerWarn

from fowm_xarm.kinematics import HOME_Q

SDK_BACKENDS = ("sdk", "recorded")

# The XArmAPI surface the driver uses (methods, then read-only properties).
SDK_METHODS = (
    "__init__",
    "connect",
    "disconnect",
    "motion_enable",
    "set_mode",
    "set_state",
    "set_servo_angle_j",
    "get_joint_states",
    "clean_error",
    "clean_warn",
    "register_error_warn_changed_callback",
    "set_gripper_mode",
    "set_gripper_enable",
    "set_gripper_speed",
    "set_gripper_position",
    "get_gripper_position",
)
SDK_PROPERTIES = ("connected", "error_code", "warn_code", "state", "mode")

SERVO_MODE = 1  # XArmAPI.set_mode: 1 = servo motion mode (set_servo_angle_j streams, no planning)
STATE_READY = 0  # XArmAPI.set_state: 0 = motion
STATE_STOP = 4  # XArmAPI.set_state: 4 = stop
CODE_NOT_CONNECTED = -1  # xarm.x3.code.APIState.NOT_CONNECTED
CODE_NOT_READY = -2  # APIState.NOT_READY
CODE_HAS_ERROR = 1  # APIState.HAS_ERROR: an uncleared controller error
CODE_HAS_WARN = 2  # APIState.HAS_WARN
CODE_MODE_NOT_CORRECT = 51  # APIState.MODE_IS_NOT_CORRECT


def controller_code_title(error_code: int, warn_code: int) -> str:
    """The SDK's English titles of a controller error and warning code ('' for 0)."""
    parts = []
    if error_code:
        parts.append(f"error {error_code}: {ControllerError(error_code).title['en']}")
    if warn_code:
        parts.append(f"warning {warn_code}: {ControllerWarn(warn_code).title['en']}")
    return "; ".join(parts)


def make_arm(backend: str, robot_ip: str, recorded_log: str = "") -> Any:
    """An unconnected arm object: the real XArmAPI (radians by default) or the recording fake."""
    if backend == "sdk":
        from xarm.wrapper import XArmAPI

        # do_not_open: the driver calls connect() itself so that a failure is handled (and retried)
        # in one place; is_radian: every angle we pass or read is in radians.
        return XArmAPI(robot_ip, is_radian=True, do_not_open=True)
    if backend == "recorded":
        if not recorded_log:
            raise ValueError("sdk_backend 'recorded' needs recorded_log (the call log path)")
        return RecordedXArm(robot_ip, is_radian=True, do_not_open=True, log_path=recorded_log)
    raise ValueError(f"sdk_backend must be one of {SDK_BACKENDS}, got {backend!r}")


class RecordedXArm:
    """Stands in for `xarm.wrapper.XArmAPI` (same signatures for the methods in SDK_METHODS).

    An ideal arm: servo targets are reached at once, and every call is appended to the log as
    {"t": monotonic s, "call": name, "args": [...], "kwargs": {...}, "ret": ...}. It is strict
    where the real controller is: set_servo_angle_j is refused unless connected, enabled, in servo
    mode (1) and in the motion state (0), and while an error is uncleared.

    The SDK-facing methods carry no type hints on purpose: their inspect.signature must equal the
    installed XArmAPI's, annotations included (tests/fowm_xarm/test_xarm_driver.py).
    """

    def __init__(self, port=None, is_radian=False, do_not_open=False, **kwargs):
        self._port = port
        self._is_radian = bool(is_radian)
        self._log = open(kwargs["log_path"], "a", buffering=1)
        self._inject_path = Path(f"{kwargs['log_path']}.inject.json")
        self._inject_seen = b""
        self._connected = False
        self._refuse_connects = 0
        self._enabled = False
        self._mode = 0
        self._state = STATE_STOP
        self._error = 0
        self._warn = 0
        self._angles = [float(a) for a in HOME_Q]  # rad
        self._velocity = [0.0] * 7
        self._gripper_pulse = 850.0
        self._callbacks: list[Callable[[dict], None]] = []
        self._record("__init__", [port], {"is_radian": is_radian, "do_not_open": do_not_open}, None)
        if not do_not_open:
            self.connect()

    # -- bookkeeping ------------------------------------------------------------------------------

    def _record(self, name: str, args: list, kwargs: dict, ret: Any) -> Any:
        self._log.write(
            json.dumps({"t": time.monotonic(), "call": name, "args": args, "kwargs": kwargs, "ret": ret})
        )
        self._log.write("\n")
        return ret

    def _apply_injection(self) -> None:
        try:
            raw = self._inject_path.read_bytes()
        except OSError:
            return
        if raw == self._inject_seen or not raw.strip():
            return
        try:
            fault = json.loads(raw)
        except json.JSONDecodeError:
            return  # half-written; read again on the next call
        self._inject_seen = raw
        self._record("_inject", [fault], {}, None)
        if fault.get("disconnect"):
            self._connected = False
            self._refuse_connects = int(fault.get("refuse_connects", 0))
        if "error_code" in fault or "warn_code" in fault:
            self._error = int(fault.get("error_code", self._error))
            self._warn = int(fault.get("warn_code", self._warn))
            if self._error:
                self._state = STATE_STOP  # the controller stops the arm on an error
            for cb in list(self._callbacks):
                cb({"error_code": self._error, "warn_code": self._warn})

    def _to_unit(self, values: list[float], is_radian: bool | None) -> list[float]:
        radian = self._is_radian if is_radian is None else is_radian
        return [float(v) if radian else math.degrees(v) for v in values]

    def _from_unit(self, values: Any, is_radian: bool | None) -> list[float]:
        radian = self._is_radian if is_radian is None else is_radian
        return [float(v) if radian else math.radians(float(v)) for v in values]

    # -- properties -------------------------------------------------------------------------------

    @property
    def connected(self):
        self._apply_injection()
        return self._connected

    @property
    def error_code(self):
        self._apply_injection()
        return self._error

    @property
    def warn_code(self):
        return self._warn

    @property
    def state(self):
        return self._state

    @property
    def mode(self):
        return self._mode

    # -- connection and state ---------------------------------------------------------------------

    def connect(self, port=None, baudrate=None, timeout=None, axis=None, **kwargs):
        self._apply_injection()
        if self._refuse_connects > 0:
            self._refuse_connects -= 1
            self._record("connect", [port], {}, "raised")
            raise Exception(
                f"connect socket failed (recorded fake, {self._refuse_connects} more refusals)"
            )  # the SDK raises a bare Exception too
        self._connected = True
        return self._record("connect", [port], {}, None)

    def disconnect(self):
        self._connected = False
        self._record("disconnect", [], {}, None)
        self._log.flush()

    def _code(self) -> int:
        self._apply_injection()
        return 0 if self._connected else CODE_NOT_CONNECTED

    def motion_enable(self, enable=True, servo_id=None):
        code = self._code()
        if code == 0:
            self._enabled = bool(enable)
        return self._record("motion_enable", [], {"enable": enable, "servo_id": servo_id}, code)

    def set_mode(self, mode=0, detection_param=0):
        code = self._code()
        if code == 0:
            self._mode = int(mode)
        return self._record("set_mode", [], {"mode": mode, "detection_param": detection_param}, code)

    def set_state(self, state=0):
        code = self._code()
        if code == 0:
            self._state = int(state) if not (state == STATE_READY and self._error) else STATE_STOP
        return self._record("set_state", [], {"state": state}, code)

    def clean_error(self):
        code = self._code()
        if code == 0:
            self._error = 0
        return self._record("clean_error", [], {}, code)

    def clean_warn(self):
        code = self._code()
        if code == 0:
            self._warn = 0
        return self._record("clean_warn", [], {}, code)

    def register_error_warn_changed_callback(self, callback=None):
        if callback is not None and callback not in self._callbacks:
            self._callbacks.append(callback)
        return self._record("register_error_warn_changed_callback", [], {}, callback is not None)

    # -- motion -----------------------------------------------------------------------------------

    def set_servo_angle_j(self, angles, speed=None, mvacc=None, mvtime=None, is_radian=None, **kwargs):
        code = self._code()
        if code == 0:
            if self._error:
                code = CODE_HAS_ERROR
            elif not self._enabled or self._state != STATE_READY:
                code = CODE_NOT_READY
            elif self._mode != SERVO_MODE:
                code = CODE_MODE_NOT_CORRECT
        if code == 0:
            new = self._from_unit(angles, is_radian)[:7]
            self._angles = new
        return self._record("set_servo_angle_j", [list(map(float, angles))], {"is_radian": is_radian}, code)

    def get_joint_states(self, is_radian=None, num=3):
        code = self._code()
        if code != 0:
            return code, [[0.0] * 7, [0.0] * 7, [0.0] * 7]
        pos = self._to_unit(self._angles, is_radian)
        vel = self._to_unit(self._velocity, is_radian)
        # Getters are logged without their (large) result: the log is about what was commanded.
        self._record("get_joint_states", [], {"is_radian": is_radian}, code)
        return code, [pos, vel, [0.0] * 7][:num]

    # -- gripper ----------------------------------------------------------------------------------

    def set_gripper_mode(self, mode, **kwargs):
        return self._record("set_gripper_mode", [mode], {}, self._code())

    def set_gripper_enable(self, enable, **kwargs):
        return self._record("set_gripper_enable", [enable], {}, self._code())

    def set_gripper_speed(self, speed, **kwargs):
        return self._record("set_gripper_speed", [speed], {}, self._code())

    def set_gripper_position(self, pos, wait=False, speed=None, auto_enable=False, timeout=None, **kwargs):
        code = self._code()
        if code == 0:
            self._gripper_pulse = float(pos)
        return self._record("set_gripper_position", [float(pos)], {"wait": wait, "speed": speed}, code)

    def get_gripper_position(self, **kwargs):
        code = self._code()
        return code, (self._gripper_pulse if code == 0 else None)


def recorded_calls(log_path: str | os.PathLike) -> list[dict]:
    """The calls a RecordedXArm logged (complete lines only: the file may be growing)."""
    calls = []
    for line in Path(log_path).read_text().splitlines():
        try:
            calls.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written
    return calls
