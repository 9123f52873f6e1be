import sys

try:
    from engine.cli import main
except KeyboardInterrupt:  # Ctrl+C while the libraries load: nothing has started yet
    sys.stderr.write("\nStopped by the user.\n")
    sys.exit(130)

sys.exit(main())
