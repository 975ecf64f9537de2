"""Write the SimpleAuthManager passwords file from the environment (run by the compose service airflow-init).

Reads AIRFLOW_ADMIN_USER and AIRFLOW_ADMIN_PASSWORD (.env) and writes ``{user: password}`` to the file named by
AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE, readable by its owner only, so Airflow never generates and
prints a password.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    user = os.environ.get("AIRFLOW_ADMIN_USER", "")
    password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
    target = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "")
    missing = [
        name
        for name, value in (
            ("AIRFLOW_ADMIN_USER", user),
            ("AIRFLOW_ADMIN_PASSWORD", password),
            ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", target),
        )
        if not value
    ]
    if missing:
        print(f"write_airflow_passwords: expected {', '.join(missing)} in the environment (see .env.example)")
        return 1
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({user: password}) + "\n")
    path.chmod(0o600)
    print(f"write_airflow_passwords: {path} holds the password of {user!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
