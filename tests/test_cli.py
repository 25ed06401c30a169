import subprocess
import sys

from ddpm import __version__
from ddpm.cli import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert capsys.readouterr().out.strip() == f"torch-ddpm {__version__}"
    assert main([]) == 0
    assert "usage: ddpm" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "ddpm", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"torch-ddpm {__version__}"
