"""The ``inferaudit`` command: a dispatcher that imports each wing only when its command runs.

The SDK itself never imports the analyzer or the collector (a serving process must not pay for
them); this module names them by string and loads the one asked for.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help). Each function takes argv (list[str]) -> int.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "analyze": ("inferaudit_analyzer.cli", "analyze_main", "audit exported traces"),
    "report": ("inferaudit_analyzer.cli_report", "report_main",
               "write the HTML/Markdown audit report"),
    "calibrate": ("inferaudit_analyzer.cli_report", "calibrate_main",
                  "sweep a model over batch sizes"),
    "collect": ("inferaudit_collector.cli", "main", "run the embedded OTLP receiver"),
}


def _usage() -> str:
    lines = ["usage: inferaudit <command> [options]", "       inferaudit --version", "",
             "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(_usage(), file=sys.stderr)
        return 2
    if args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if args[0] in {"-V", "--version"}:
        from inferaudit_sdk._version import VERSION

        print(f"inferaudit {VERSION}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"inferaudit: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # Only a missing third-party part is the user's install to fix; an ImportError raised
        # inside our own packages is a bug and must surface as one.
        if (exc.name or "").startswith("inferaudit_") and exc.name != module_name.split(".")[0]:
            raise
        print(
            f"inferaudit {args[0]}: this command needs an optional part that is not installed "
            f"({exc}). From a clone: pip install -e '.[analyzer,collector]'",
            file=sys.stderr,
        )
        return 1
    return int(getattr(module, func_name)(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
