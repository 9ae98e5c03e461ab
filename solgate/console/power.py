"""Chassis power actions in the words an operator uses: one list for every way in.

The web API and page, the engine (`ConsoleManager.power`) and `solgate power` all
accept exactly these; "status" only reads, the others map to Chassis Control values.
"""

from __future__ import annotations

from solgate.ipmi.commands import ChassisAction

__all__ = ["POWER_ACTIONS", "POWER_CHANGES"]

# Actions that change the power state, by name ("soft" asks the OS for an ACPI shutdown).
POWER_CHANGES: dict[str, ChassisAction] = {
    "on": ChassisAction.ON,
    "off": ChassisAction.OFF,
    "cycle": ChassisAction.CYCLE,
    "reset": ChassisAction.RESET,
    "soft": ChassisAction.SOFT,
}
# Everything a user may ask for: the changes, and "status", which only reads.
POWER_ACTIONS: tuple[str, ...] = ("status", *POWER_CHANGES)
