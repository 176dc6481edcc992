"""`whisperwire --modal-app NAME`: the address comes from the app's registry on Modal; with no
Modal credentials (as here) the user gets one clear line and exit 1, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.speech import JFK

WHISPERWIRE = str(Path(sys.executable).parent / "whisperwire")


def test_modal_app_without_credentials_explains_itself(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)  # no ~/.modal.toml
    result = subprocess.run(
        [WHISPERWIRE, "transcribe", "--modal-app", "whisperwire", str(JFK.path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "whisperwire-endpoints" in result.stderr and "credentials" in result.stderr
    assert "Traceback" not in result.stderr
