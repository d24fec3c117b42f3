import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_MODULES = ("fastapi", "starlette", "sqlalchemy", "celery", "redis")

CODE = f"""
import sys
import flame_core, flame_core.config, flame_core.encoders, flame_core.routing, flame_core.experts
import flame_core.heads, flame_core.losses, flame_core.model, flame_core.calibration, flame_core.shift
loaded = [m for m in {SERVICE_MODULES!r} if m in sys.modules]
assert not loaded, f"flame_core pulled in service modules: {{loaded}}"
print("ok")
"""


def test_model_modules_import_without_service_dependencies():
    result = subprocess.run(
        [sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
