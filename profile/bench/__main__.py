"""`python profile/bench [options]`: the benchmark suite from a source checkout (docs/benchmarks.md).

    python profile/bench [--quick] [--device cuda] [...]   the CPU suite, or the GPU suite (cli.py)
    python profile/bench gpu [--table | --rehearse | --issue-table RESULT] [--out F] [...]
                                                           the GPU suite's own entry (cli.gpu_main)

Also `python -m bench [...]` with profile/ on PYTHONPATH.
"""
import sys
from pathlib import Path

if not __package__:
    # run as a folder: sys.path[0] is this folder; import the package from profile/ instead, and
    # bitlinear from the checkout when it is not installed
    _PROFILE = Path(__file__).resolve().parent.parent
    sys.path[0:1] = [str(_PROFILE), str(_PROFILE.parent)]

from bench import cli  # noqa: E402

argv = sys.argv[1:]
sys.exit(cli.gpu_main(argv[1:]) if argv[:1] == ["gpu"] else cli.main(argv))
