"""Package-level promises: a light import, and the CLI's entry point."""

import subprocess
import sys


def test_import_does_not_load_optional_integrations():
    code = ("import sys, hypernoise, hypernoise.generators, hypernoise.rewards, hypernoise.cli.main; "
            "hypernoise.cli.main.build_parser(); "
            "print(sorted(m for m in ('diffusers', 'transformers', 'wandb', 'tensorboard', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_console_script_reports_its_version():
    out = subprocess.run([sys.executable, "-m", "hypernoise.cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("hypernoise ")
