"""The command's exit codes, named once for every subcommand."""

EXIT_OK = 0  # success
EXIT_NO_ANSWER = 1  # the run ended without an answer: budget hit, model, checkpoint or sandbox error
EXIT_USAGE = 2  # bad arguments or unreadable input
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); a trace, when given, can be resumed
