"""Print zbifrost's runtime requirements pinned to the lowest release each admits (`>=X` becomes `==X`),
without their extras, as a pip constraints file.

Run with the Python of an environment where zbifrost is installed: the requirements are read from its
installed metadata, that is from setup.py, so the lower bounds written there are the ones checked.
A requirement without a lower bound is an error: its lowest release would be a guess.
"""

import re
import sys
from importlib.metadata import requires

_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(\[[A-Za-z0-9_,\-]+\])?\s*(?P<specifiers>[^;]*)$")


def lowest_pins(requirements):
    pins = []
    for requirement in requirements:
        if ";" in requirement:  # an extra's (tls, test) or a platform's: not a runtime requirement
            continue
        match = _REQUIREMENT.match(requirement.strip())
        lower = [spec[2:].strip() for spec in match["specifiers"].split(",") if spec.strip().startswith(">=")]
        if len(lower) != 1:
            sys.exit(f"lowest_requirements: {requirement!r} has no single lower bound (>=)")
        pins.append(f"{match['name']}=={lower[0]}")
    return pins


if __name__ == "__main__":
    print("\n".join(lowest_pins(requires("zbifrost"))))
